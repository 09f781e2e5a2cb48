/**
 * Prints the nftables `bridge dozencloud` table of the `linux-bridge` network driver, for a top-of-rack
 * Linux bridge run by `dozen-tor-port` (scripts/tor/dozen-tor-port): the same renderBridgeRuleset() the
 * driver installs, so the ToR and the controller-side bridge never drift apart.
 *
 *   npx tsx scripts/tor/ruleset.ts <uplink> <controller-ip> [--ipv6]
 *
 * Run it where this repository is (the controller); pipe it to the ToR:
 *   npx tsx scripts/tor/ruleset.ts eno2 10.77.0.1 | ssh tor1 dozen-tor-port init br-boot eno2 10.77.0.1
 */
import { isIP } from 'node:net';
import { assertIfName } from '../../src/network/driver.js';
import { renderBridgeRuleset } from '../../src/network/nft-ruleset.js';

const args = process.argv.slice(2);
const ipv6 = args.includes('--ipv6');
const [uplink, controllerIp, ...rest] = args.filter((a) => a !== '--ipv6');
if (!uplink || !controllerIp || rest.length) {
  process.stderr.write('usage: npx tsx scripts/tor/ruleset.ts <uplink> <controller-ip> [--ipv6]\n');
  process.exit(2);
}
try {
  assertIfName(uplink, 'uplink');
  if (isIP(controllerIp) !== 4) throw new Error(`invalid controller IPv4 address: ${JSON.stringify(controllerIp)}`);
} catch (err) {
  process.stderr.write(`ruleset.ts: ${(err as Error).message}\n`);
  process.exit(2);
}
process.stdout.write(renderBridgeRuleset({ uplink, controllerIp, ipv6 }));

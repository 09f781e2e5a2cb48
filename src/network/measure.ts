/**
 * What attaching boards costs as their number grows, on a throw-away bridge: for benchmarks and the
 * scale test. Needs root, nft and iproute2. Everything lives in one netns `dzn-<hex>`, removed at the end.
 */
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { pino } from 'pino';
import { addBridge, createNetns, deleteNetns, linkUp } from '../lab/netns.js';
import { run } from './exec.js';
import { LinuxBridgeNetwork } from './linux-bridge.js';
import { BRIDGE_TABLE, renderAttach, SETS } from './nft-ruleset.js';

export interface AttachMeasurement {
  boards: number;
  /** Rules in the bridge table with 2 boards attached, and with all of them. Equal: attach adds no rule. */
  rulesAt2: number;
  rulesAtN: number;
  /** Elements of the `boards` set at the end (= boards). */
  elementsAtN: number;
  /** Mean wall time of one attach (bridge flags + one nft transaction) over the first 10 and the last 10. */
  msPerAttachFirst10: number;
  msPerAttachLast10: number;
  totalMs: number;
}

async function ruleCount(netns: string): Promise<number> {
  const doc = JSON.parse(await run('nft', ['-j', 'list', 'table', 'bridge', BRIDGE_TABLE], { netns })) as { nftables: Array<Record<string, unknown>> };
  return doc.nftables.filter((x) => 'rule' in x).length;
}

async function setSize(netns: string): Promise<number> {
  const doc = JSON.parse(await run('nft', ['-j', 'list', 'set', 'bridge', BRIDGE_TABLE, SETS.boards], { netns })) as { nftables: Array<{ set?: { elem?: unknown[] } }> };
  return doc.nftables.find((x) => x.set)?.set?.elem?.length ?? 0;
}

/**
 * Attach `n` boards and report rule counts and timings. `withPorts` (default true): real veth ports on a
 * real bridge through the whole driver (bridge flags + nft); false: only the driver's nft transaction per
 * board (port names need not exist for set elements), which is what the rule-count claim is about.
 */
export async function measureAttach(n: number, opts: { withPorts?: boolean } = {}): Promise<AttachMeasurement> {
  const withPorts = opts.withPorts ?? true;
  if (n < 20) throw new Error('measureAttach: n must be at least 20');
  const ns = `dzn-${randomBytes(4).toString('hex')}`;
  try {
    await createNetns(ns);
    await addBridge('br0', ns);
    await linkUp('br0', ns);
    // Ports in one `ip -batch`: creating them is not what we measure.
    // (veth pairs, one end on the bridge: this kernel has no `dummy` driver.)
    const lines = ['link add up0 type veth peer name upx', 'link set up0 master br0 up'];
    if (withPorts) for (let i = 0; i < n; i++) lines.push(`link add d${i} type veth peer name e${i}`, `link set d${i} master br0 up`);
    await run('ip', ['-n', ns, '-batch', '-'], { input: lines.join('\n') + '\n', timeoutMs: 120_000 });
    const net = new LinuxBridgeNetwork({ bridge: 'br0', netns: ns, uplink: 'up0', controllerIp: '10.250.0.1', services: { dhcp: 67, tftp: 69, iscsi: 3260, metadata: 8775 } }, pino({ level: 'silent' }));
    await net.start();
    const times: number[] = [];
    let rulesAt2 = 0;
    const t0 = performance.now();
    for (let i = 0; i < n; i++) {
      const mac = `02:00:00:${((i >> 16) & 0xff).toString(16).padStart(2, '0')}:${((i >> 8) & 0xff).toString(16).padStart(2, '0')}:${(i & 0xff).toString(16).padStart(2, '0')}`;
      const t = performance.now();
      const port = { boardId: `b${i}`, port: `d${i}`, mac, ip: `10.${100 + (i >> 16)}.${(i >> 8) & 0xff}.${i & 0xff}` };
      if (withPorts) await net.attach(port);
      else await run('nft', ['-f', '-'], { netns: ns, input: renderAttach(port) });
      times.push(performance.now() - t);
      if (i === 1) rulesAt2 = await ruleCount(ns);
    }
    const totalMs = performance.now() - t0;
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    return {
      boards: n,
      rulesAt2,
      rulesAtN: await ruleCount(ns),
      elementsAtN: await setSize(ns),
      msPerAttachFirst10: mean(times.slice(0, 10)),
      msPerAttachLast10: mean(times.slice(-10)),
      totalMs,
    };
  } finally {
    await deleteNetns(ns).catch(() => {});
  }
}

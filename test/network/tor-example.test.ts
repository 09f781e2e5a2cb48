/**
 * The README's worked example of the `command` network driver: a Linux-bridge top-of-rack switch whose
 * board ports scripts/tor/dozen-tor-port fences, driven by the real `command` driver with the README's
 * four templates. The ToR here is the segment's bridge namespace: where the README's templates say
 * `ssh tor1 dozen-tor-port`, these say `ip netns exec <that namespace> bash <repo>/scripts/tor/dozen-tor-port`;
 * the rest is the same. The table comes from `npx tsx scripts/tor/ruleset.ts` (the linux-bridge driver's
 * renderBridgeRuleset), installed with `dozen-tor-port init`, once, as an operator would.
 *
 * Then a subset of bridge-attacks.test.ts's attacks on boards A, B (tenant 1) and C (tenant 2; root in
 * its namespace, as a tenant is on its board): each has a positive control first (the legitimate path
 * works) and a marker after it on a path that is open: the marker arrives, the attack did not.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shellQuote } from '../../src/network/command.js';
import type { NetworkDriver } from '../../src/network/driver.js';
import { run } from '../../src/network/exec.js';
import { BRIDGE_TABLE, renderBridgeRuleset, renderDetach, renderLeave, SETS } from '../../src/network/nft-ruleset.js';
import { networkDriver } from '../../src/network/registry.js';
import { requireRoot, requireTools } from '../helpers/tools.js';
import { capture, createSegment, tcpHello, dhcpLease, dhcpServer, pinNeighbour, pings, reAddr, recorder, sh, udpAsk, udpMarker, udpSeen, udpSend, uniq, Watch, type Host, type Segment } from './topology.js';

requireRoot();
requireTools('nft', 'bridge', 'flock', 'socat', 'dnsmasq', 'udhcpc', 'tcpdump', 'ping');

const TOR_PORT = fileURLToPath(new URL('../../scripts/tor/dozen-tor-port', import.meta.url));
const RULESET = fileURLToPath(new URL('../../scripts/tor/ruleset.ts', import.meta.url));

let seg: Segment;
let tor: NetworkDriver;
let ctlRec: Watch;
let A: Host, B: Host, C: Host;
const watches: Watch[] = [];
const dir = mkdtempSync(join(tmpdir(), 'dzn-'));
const stateDir = join(dir, 'tor-state');
const envBefore = process.env.DOZEN_TOR_STATE;

beforeAll(async () => {
  seg = await createSegment(['A', 'B', 'C']);
  ({ A, B, C } = seg.boards as Record<'A' | 'B' | 'C', Host>);
  // The ToR's network numbers go to this run's temp dir, not the host's /run/dozen-tor: the driver's
  // commands inherit the variable.
  process.env.DOZEN_TOR_STATE = stateDir;
  // Once, as the operator does: the table from the driver's own code, piped to init on the ToR.
  const ruleset = await run('npx', ['tsx', RULESET, 'up0', seg.ctl.ip], { timeoutMs: 60_000 });
  expect(ruleset).toBe(renderBridgeRuleset({ uplink: 'up0', controllerIp: seg.ctl.ip, ipv6: false }));
  await run('bash', [TOR_PORT, 'init', 'br0', 'up0', seg.ctl.ip], { netns: seg.brNs, input: ruleset });
  // The README's templates; `ssh tor1 dozen-tor-port` → `ip netns exec <ToR namespace> bash <script>`.
  const onTor = `ip netns exec ${seg.brNs} bash ${shellQuote(TOR_PORT)}`;
  tor = networkDriver({
    driver: 'command',
    attach: `${onTor} attach {port} {mac} {ip}`,
    detach: `${onTor} detach {port}`,
    join: `${onTor} join {port} {networkId}`,
    leave: `${onTor} leave {port}`,
    // The controller's own input filter, as the README's example sets it.
    controllerIface: 'eth0',
    controllerNetns: seg.ctl.ns,
    services: { dhcp: 67, tftp: 69, iscsi: 3260, metadata: 8775 },
  });
  await tor.start();
  for (const b of [A, B, C]) await tor.attach({ boardId: b.name, port: b.port, mac: b.mac, ip: b.ip });
  // The controller's TFTP stand-in: the path every board may use.
  ctlRec = await recorder(seg.ctl.ns, ['udp:69', 'tcp:8775', 'tcp:2222']);
  watches.push(ctlRec);
});

afterAll(async () => {
  for (const w of watches) w.stop();
  await tor?.stop().catch(() => {});
  await seg?.cleanup();
  rmSync(dir, { recursive: true, force: true });
  if (envBefore === undefined) delete process.env.DOZEN_TOR_STATE;
  else process.env.DOZEN_TOR_STATE = envBefore;
});

/** dozen-tor-port run by hand on the ToR. */
const torPort = (...args: string[]) => sh(seg.brNs, 'bash', [TOR_PORT, ...args]);

/** Everything the ToR holds for the boards: the table, the ports' flags, static FDB entries, network numbers. */
async function torState(): Promise<string> {
  const fdb = (await sh(seg.brNs, 'bridge', ['fdb', 'show', 'br', 'br0'])).split('\n').filter((l) => / static$/.test(l));
  return [await sh(seg.brNs, 'nft', ['list', 'table', 'bridge', BRIDGE_TABLE]), await sh(seg.brNs, 'bridge', ['-d', 'link', 'show']), ...fdb, readFileSync(join(stateDir, 'networks'), 'utf8')].join('\n');
}

type Flags = { isolated?: boolean; learning?: boolean; locked?: boolean };
async function portFlags(): Promise<Record<string, Flags>> {
  const links = JSON.parse(await sh(seg.brNs, 'ip', ['-d', '-j', 'link', 'show', 'master', 'br0'])) as Array<{ ifname: string; linkinfo?: { info_slave_data?: Flags } }>;
  return Object.fromEntries(links.map((l) => [l.ifname, l.linkinfo?.info_slave_data ?? {}]));
}

/** The ports in an nft set or map of the ToR's table. */
async function setPorts(name: string): Promise<string[]> {
  const kind = name === SETS.boardNet ? 'map' : 'set';
  const doc = JSON.parse(await sh(seg.brNs, 'nft', ['-j', 'list', kind, 'bridge', BRIDGE_TABLE, name])) as { nftables: Array<Record<string, { elem?: unknown[] }>> };
  const elems = doc.nftables.find((x) => x[kind])?.[kind]?.elem ?? [];
  const port = (e: unknown): string => (typeof e === 'string' ? e : Array.isArray(e) ? port(e[0]) : port(Object.values(e as object)[0]));
  return elems.map(port).sort();
}

/** `nft -c`: the kernel checks the transaction (a delete of an element that is not there fails) and applies nothing. */
const nftCheck = (input: string) => run('nft', ['-c', '-f', '-'], { netns: seg.brNs, input });

/** A's board boots normally: its datagram reaches TFTP and the answer comes back. */
async function positiveControl(): Promise<void> {
  const m = `LEGIT-${uniq()}`;
  expect(await udpAsk(A.ns, seg.ctl.ip, 69, m)).toContain(`ack ${m}`);
  expect(udpSeen(ctlRec, 69, m)[0]).toMatch(new RegExp(`^udp 69 ${reAddr(A.ip)} `));
}

describe('the README\'s top-of-rack example: dozen-tor-port under the command driver', () => {
  it('the ToR holds what the linux-bridge driver programs for the same boards, and a repeated command changes nothing', async () => {
    const st = await tor.state();
    expect(st).toMatchObject({ driver: 'command', boardIsolation: 'operator', problems: [] });
    expect(st.ports.map((p) => p.port)).toEqual([A.port, B.port, C.port]);
    const flags = await portFlags();
    for (const b of [A, B, C]) expect(flags[b.port], b.port).toMatchObject({ isolated: true, learning: false, locked: true });
    expect(flags.up0).toMatchObject({ isolated: false, locked: false });
    const fdb = await sh(seg.brNs, 'bridge', ['fdb', 'show', 'br', 'br0']);
    for (const b of [A, B, C]) expect(fdb).toContain(`${b.mac} dev ${b.port} master br0 static`);
    // The elements are the ones the linux-bridge driver adds: its own detach transaction finds every one, and there are no others.
    for (const b of [A, B, C]) await nftCheck(renderDetach(b));
    for (const set of [SETS.boards, SETS.boardMac, SETS.boardIpv4]) expect(await setPorts(set), set).toEqual([A.port, B.port, C.port].sort());
    expect(await setPorts(SETS.boardNet)).toEqual([]);

    const before = await torState();
    await torPort('attach', A.port, A.mac, A.ip);
    await torPort('leave', A.port);
    await torPort('detach', 'pnobody');
    expect(await torState()).toBe(before);
    // A port that is not the bridge's, the uplink, and a MAC another port holds are refused.
    await expect(torPort('attach', 'eth9', '02:00:00:00:00:99', `${seg.prefix}.99`)).rejects.toThrow(/not a port of bridge br0/);
    await expect(torPort('attach', 'up0', '02:00:00:00:00:99', `${seg.prefix}.99`)).rejects.toThrow(/is the uplink/);
    await expect(torPort('attach', C.port, A.mac, C.ip)).rejects.toThrow(new RegExp(`already attached to port ${A.port}`));
    expect(await torState()).toBe(before);
  });

  it('(a) IP spoofing: C sending as A (extra address, then as its only address) reaches nothing', async () => {
    await positiveControl();
    // At C's port of the ToR: proof that the spoofed datagrams did leave C.
    const atPort = await capture(seg.brNs, 'udp port 69', watches, C.port);
    await pinNeighbour(C.ns, seg.ctl.ip, seg.ctl.mac);
    const extra = `SPOOF-EXTRA-${uniq()}`;
    await sh(C.ns, 'ip', ['addr', 'add', `${A.ip}/32`, 'dev', 'eth0']);
    await udpSend(C.ns, seg.ctl.ip, 69, extra, A.ip);
    await sh(C.ns, 'ip', ['addr', 'del', `${A.ip}/32`, 'dev', 'eth0']);
    const only = `SPOOF-ONLY-${uniq()}`;
    const become = async (addr: string) => {
      await sh(C.ns, 'ip', ['addr', 'flush', 'dev', 'eth0', 'scope', 'global']);
      await sh(C.ns, 'ip', ['addr', 'add', `${addr}/24`, 'dev', 'eth0']);
      await pinNeighbour(C.ns, seg.ctl.ip, seg.ctl.mac);
    };
    await become(A.ip);
    await udpSend(C.ns, seg.ctl.ip, 69, only);
    await become(C.ip);
    await udpMarker(ctlRec, C, seg.ctl.ip, 69);
    await atPort.waitFor(new RegExp(`${reAddr(C.ip)}\\.\\d+ > ${reAddr(seg.ctl.ip)}\\.69:`), 5000, 'the marker at C\'s port');
    const spoofed = atPort.lines.filter((l) => l.includes(C.mac) && new RegExp(`${reAddr(A.ip)}\\.\\d+ > ${reAddr(seg.ctl.ip)}\\.69:`).test(l));
    atPort.stop();
    expect(spoofed).toHaveLength(2);
    expect(udpSeen(ctlRec, 69, extra)).toEqual([]);
    expect(udpSeen(ctlRec, 69, only)).toEqual([]);
    await positiveControl();
  });

  it('(b) rogue DHCP: C\'s dnsmasq, in one private network with A so that it hears A, offers A nothing', async () => {
    await tor.join('A', 'net-dhcp');
    await tor.join('C', 'net-dhcp');
    const servers: Watch[] = [];
    try {
      expect(await pings(A.ns, C.ip)).toBe(true); // they do share a network
      const legit = await dhcpServer(seg.ctl, dir, [`--dhcp-range=${seg.prefix}.0,static,255.255.255.0`, `--dhcp-host=${A.mac},${A.ip}`], watches);
      const rogue = await dhcpServer(C, dir, [`--dhcp-range=${seg.prefix}.200,${seg.prefix}.210,255.255.255.0,1h`, '--dhcp-authoritative', '--no-ping', '--dhcp-broadcast', `--dhcp-option=option:router,${C.ip}`], watches);
      servers.push(legit, rogue);
      const atA = await capture(A.ns, 'udp port 67 or udp port 68 or udp port 7777', watches);
      // Positive control: A's lease comes from the controller, with A's reserved address.
      expect(await dhcpLease(A, dir)).toMatch(new RegExp(`udhcpc-event bound ip=${reAddr(A.ip)} serverid=${reAddr(seg.ctl.ip)} `));
      await atA.waitFor(new RegExp(`^.*${seg.ctl.mac} > .*${reAddr(seg.ctl.ip)}\\.67 > `), 5000, 'controller offer at A');
      // C's server did hear A and did answer: the ToR's drop, not deafness, kept its offer away.
      await rogue.waitFor(new RegExp(`DHCPOFFER\\(eth0\\).*${A.mac}`), 5000, 'rogue offer sent by C');
      // Marker after C's offers: C's next datagram to A arrives (same network), its offers did not.
      await udpSend(C.ns, A.ip, 7777, 'MARKER');
      await atA.waitFor(new RegExp(`${reAddr(C.ip)}\\.\\d+ > ${reAddr(A.ip)}\\.7777: UDP`), 5000, 'marker from C at A');
      atA.stop();
      expect(atA.lines.filter((l) => /\.67 > /.test(l) && (l.includes(C.mac) || l.includes(`${C.ip}.67`)))).toEqual([]);
    } finally {
      for (const w of servers) w.stop();
      await tor.leave('A');
      await tor.leave('C');
    }
  });

  it('(c) a private network: A and B reach each other, C reaches neither, and leave ends it', async () => {
    expect(await pings(A.ns, B.ip)).toBe(false);
    await tor.join('A', 'tenant-1');
    await tor.join('B', 'tenant-1');
    expect((await tor.state()).networks).toEqual([{ id: 'tenant-1', boards: ['A', 'B'] }]);
    // One number for the network, and the linux-bridge driver's own leave finds both ports' elements.
    const [id, num] = readFileSync(join(stateDir, 'networks'), 'utf8').trim().split(' ');
    expect(id).toBe('tenant-1');
    for (const b of [A, B]) await nftCheck(renderLeave(b.port, Number(num)));
    expect(await portFlags()).toMatchObject({ [A.port]: { isolated: false }, [B.port]: { isolated: false }, [C.port]: { isolated: true } });
    const before = await torState();
    await torPort('join', A.port, 'tenant-1'); // again: no change
    expect(await torState()).toBe(before);

    // The failed ping above may have left A's kernel at the end of resolving B's address (its last ARP
    // probe sent before the join): it would drop the next pings without asking again. Start afresh.
    await sh(A.ns, 'ip', ['neigh', 'flush', 'to', B.ip, 'dev', 'eth0']);
    expect(await pings(A.ns, B.ip)).toBe(true);
    expect(await pings(B.ns, A.ip)).toBe(true);
    for (const h of [A, B]) {
      // Both sides know the other's MAC: the packets really go out, the ToR is what stops them.
      await pinNeighbour(C.ns, h.ip, h.mac);
      await pinNeighbour(h.ns, C.ip, C.mac);
      expect(await pings(C.ns, h.ip)).toBe(false);
      expect(await pings(h.ns, C.ip)).toBe(false);
    }
    await udpMarker(ctlRec, C, seg.ctl.ip, 69);

    await tor.leave('A');
    await tor.leave('B');
    expect(await pings(A.ns, B.ip)).toBe(false);
    expect(await setPorts(SETS.boardNet)).toEqual([]);
    expect(await setPorts(SETS.netMember)).toEqual([]);
    expect(readFileSync(join(stateDir, 'networks'), 'utf8')).toBe(''); // the number is free again
    for (const b of [A, B]) expect((await portFlags())[b.port]).toMatchObject({ isolated: true });
  });

  it('(e) the controller, filtered by the command driver too, answers boards only on its boot service ports', async () => {
    expect(await tcpHello(A.ns, seg.ctl.ip, 8775)).toContain('hello 8775');
    expect(await tcpHello(A.ns, seg.ctl.ip, 2222)).toBe('');
    expect(await tcpHello(seg.ctl.ns, '127.0.0.1', 2222)).toContain('hello 2222'); // the port is there, for the controller itself
    expect((await tor.state()).problems).toEqual([]);
  });

  it('(d) detach: nothing from C\'s port gets through (not even DHCP), and detaching again changes nothing', async () => {
    const legit = await dhcpServer(seg.ctl, dir, [`--dhcp-range=${seg.prefix}.0,static,255.255.255.0`, `--dhcp-host=${C.mac},${C.ip}`], watches);
    // Positive control: C's port is open now, to DHCP and to TFTP.
    expect(await dhcpLease(C, dir)).toMatch(new RegExp(`udhcpc-event bound ip=${reAddr(C.ip)} serverid=${reAddr(seg.ctl.ip)} `));
    await udpMarker(ctlRec, C, seg.ctl.ip, 69);
    await tor.detach('C');
    expect(tor.ports().map((p) => p.boardId)).toEqual(['A', 'B']);
    for (const set of [SETS.boards, SETS.boardMac, SETS.boardIpv4]) expect(await setPorts(set), set).toEqual([A.port, B.port].sort());
    expect((await portFlags())[C.port]).toMatchObject({ isolated: true, learning: false, locked: true });
    expect(await sh(seg.brNs, 'bridge', ['fdb', 'show', 'br', 'br0'])).not.toContain(C.mac);

    const atCtl = await capture(seg.ctl.ns, `ether src ${C.mac}`, watches);
    await pinNeighbour(C.ns, seg.ctl.ip, seg.ctl.mac);
    const s = `FROM-DETACHED-${uniq()}`;
    await udpSend(C.ns, seg.ctl.ip, 69, s);
    expect(await pings(C.ns, seg.ctl.ip)).toBe(false);
    await dhcpLease(C, dir).then(
      (out) => expect.fail(`C got a lease: ${out}`),
      () => {},
    );
    // Marker: A's datagram after all of C's arrives.
    await udpMarker(ctlRec, A, seg.ctl.ip, 69);
    atCtl.stop();
    legit.stop();
    expect(udpSeen(ctlRec, 69, s)).toEqual([]);
    expect(atCtl.lines.filter((l) => / > /.test(l))).toEqual([]);

    const before = await torState();
    await torPort('detach', C.port);
    expect(await torState()).toBe(before);
  });
});

/**
 * Real attacks on the `linux-bridge` network driver. Every host is a network namespace: a controller on
 * the bridge's uplink port, boards A and B (tenant 1) and C (tenant 2) on fenced ports. C is root in its
 * namespace, as a tenant is on its board. Each attack has a positive control first (the legitimate path
 * works) and is proven to have got nothing by a marker sent after it on a path that is open: the marker
 * arrives, the attack did not.
 */
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ip } from '../../src/lab/netns.js';
import { LinuxBridgeNetwork } from '../../src/network/linux-bridge.js';
import { requireRoot, requireTools } from '../helpers/tools.js';
import { until } from '../helpers/until.js';
import { createSegment, pings, recorder, sh, tcpHello, udpAsk, udpSend, uniq, Watch, type Host, type Segment } from './topology.js';

requireRoot();
requireTools('nft', 'bridge', 'socat', 'arping', 'dnsmasq', 'udhcpc', 'tcpdump', 'ping');

let seg: Segment;
let net: LinuxBridgeNetwork;
let ctlRec: Watch;
let A: Host, B: Host, C: Host, D: Host;
const watches: Watch[] = [];
const dir = mkdtempSync(join(tmpdir(), 'dzn-'));

beforeAll(async () => {
  // D is plugged in but not enrolled: its port is never attached.
  seg = await createSegment(['A', 'B', 'C', 'D']);
  ({ A, B, C, D } = seg.boards as Record<'A' | 'B' | 'C' | 'D', Host>);
  net = new LinuxBridgeNetwork({
    bridge: 'br0',
    netns: seg.brNs,
    uplink: 'up0',
    controllerIp: seg.ctl.ip,
    controllerIface: 'eth0',
    controllerNetns: seg.ctl.ns,
    services: { dhcp: 67, tftp: 69, iscsi: 3260, metadata: 8775 },
  });
  await net.start();
  for (const b of [A, B, C]) await net.attach({ boardId: b.name, port: b.port, mac: b.mac, ip: b.ip });
  // The boot services (TFTP on UDP 69, iSCSI, metadata), and two ports the controller must not expose.
  ctlRec = await recorder(seg.ctl.ns, ['udp:69', 'udp:5555', 'tcp:3260', 'tcp:8775', 'tcp:2222']);
  watches.push(ctlRec);
  // Gullible neighbours make the ARP attack stronger: they take even unsolicited ARP.
  for (const ns of [seg.ctl.ns, A.ns]) await sh(ns, 'sysctl', ['-q', '-w', 'net.ipv4.conf.eth0.arp_accept=1']);
});

afterAll(async () => {
  for (const w of watches) w.stop();
  await net?.stop().catch(() => {});
  await seg?.cleanup();
  rmSync(dir, { recursive: true, force: true });
});

/** The controller received this exact UDP payload on port 69 (from `from`). */
const sawUdp = (port: number, text: string) => ctlRec.lines.filter((l) => l.startsWith(`udp ${port} `) && l.endsWith(` ${text}`));

/** Positive marker: `h` sends a legitimate datagram to TFTP and the controller gets it. */
async function marker(h: Host): Promise<void> {
  const m = `MARKER-${uniq()}`;
  await udpSend(h.ns, seg.ctl.ip, 69, m);
  await ctlRec.waitFor(new RegExp(`^udp 69 ${h.ip.replace(/\./g, '\\.')} ${m}$`), 5000, `marker from ${h.name}`);
}

async function neighbour(ns: string, addr: string): Promise<string | undefined> {
  const out = JSON.parse(await ip(['-j', 'neigh', 'show', 'dev', 'eth0', 'to', addr], ns)) as Array<{ lladdr?: string }>;
  return out[0]?.lladdr;
}

/** A's board boots normally: its datagram reaches TFTP and the answer comes back. */
async function positiveControl(): Promise<void> {
  const m = `LEGIT-${uniq()}`;
  expect(await udpAsk(A.ns, seg.ctl.ip, 69, m)).toContain(`ack ${m}`);
  expect(sawUdp(69, m)[0]).toMatch(new RegExp(`^udp 69 ${A.ip.replace(/\./g, '\\.')} `));
}

describe('linux-bridge network driver under attack', () => {
  it('state() finds the datapath as the driver set it up (flags, sets, controller table)', async () => {
    expect((await net.state()).problems).toEqual([]);
  });

  it('(a) IP spoofing: C sending as A (extra address, then primary address) reaches nothing', async () => {
    await positiveControl();
    // C knows the controller's MAC already, so its spoofed datagrams really leave (no ARP needed).
    await sh(C.ns, 'ip', ['neigh', 'replace', seg.ctl.ip, 'lladdr', seg.ctl.mac, 'dev', 'eth0', 'nud', 'permanent']);
    const s1 = `SPOOF-SECOND-${uniq()}`;
    await sh(C.ns, 'ip', ['addr', 'add', `${A.ip}/32`, 'dev', 'eth0']);
    await udpSend(C.ns, seg.ctl.ip, 69, s1, A.ip);
    await sh(C.ns, 'ip', ['addr', 'del', `${A.ip}/32`, 'dev', 'eth0']);
    // C makes A's address its only one.
    const s2 = `SPOOF-PRIMARY-${uniq()}`;
    await sh(C.ns, 'ip', ['addr', 'flush', 'dev', 'eth0', 'scope', 'global']);
    await sh(C.ns, 'ip', ['addr', 'add', `${A.ip}/24`, 'dev', 'eth0']);
    await sh(C.ns, 'ip', ['neigh', 'replace', seg.ctl.ip, 'lladdr', seg.ctl.mac, 'dev', 'eth0', 'nud', 'permanent']);
    await udpSend(C.ns, seg.ctl.ip, 69, s2);
    await sh(C.ns, 'ip', ['addr', 'flush', 'dev', 'eth0', 'scope', 'global']);
    await sh(C.ns, 'ip', ['addr', 'add', `${C.ip}/24`, 'dev', 'eth0']);
    await sh(C.ns, 'ip', ['neigh', 'replace', seg.ctl.ip, 'lladdr', seg.ctl.mac, 'dev', 'eth0', 'nud', 'permanent']);
    await marker(C);
    expect(sawUdp(69, s1)).toEqual([]);
    expect(sawUdp(69, s2)).toEqual([]);
  });

  it('(b) MAC+IP spoofing: a macvlan on C with A\'s MAC and IP reaches nothing and does not steal A\'s traffic', async () => {
    await positiveControl();
    const s = `SPOOF-MACVLAN-${uniq()}`;
    await sh(C.ns, 'ip', ['link', 'add', 'link', 'eth0', 'name', 'mv0', 'address', A.mac, 'type', 'macvlan', 'mode', 'private']);
    try {
      await sh(C.ns, 'ip', ['addr', 'add', `${A.ip}/32`, 'dev', 'mv0']);
      await sh(C.ns, 'ip', ['link', 'set', 'mv0', 'up']);
      await sh(C.ns, 'ip', ['neigh', 'replace', seg.ctl.ip, 'lladdr', seg.ctl.mac, 'dev', 'mv0', 'nud', 'permanent']);
      await sh(C.ns, 'ip', ['route', 'replace', `${seg.ctl.ip}/32`, 'dev', 'mv0', 'src', A.ip]);
      for (let i = 0; i < 3; i++) await udpSend(C.ns, seg.ctl.ip, 69, s, A.ip);
    } finally {
      await sh(C.ns, 'ip', ['link', 'del', 'mv0']);
    }
    await marker(C);
    expect(sawUdp(69, s)).toEqual([]);
    // A's MAC is still A's: the bridge sends A's traffic to A's port, and A still boots.
    const fdb = await sh(seg.brNs, 'bridge', ['fdb', 'show', 'br', 'br0']);
    expect(fdb).toContain(`${A.mac} dev ${A.port} master br0 static`);
    expect(fdb).not.toMatch(new RegExp(`${A.mac} dev ${C.port}`));
    await positiveControl();
  });

  it('(c) gratuitous ARP from C claiming the controller\'s and A\'s addresses changes no neighbour table', async () => {
    await positiveControl(); // A and the controller now know each other's MACs
    expect(await neighbour(seg.ctl.ns, A.ip)).toBe(A.mac);
    expect(await neighbour(A.ns, seg.ctl.ip)).toBe(seg.ctl.mac);
    await ip(['neigh', 'flush', 'dev', 'eth0', 'to', C.ip], seg.ctl.ns);
    // A fixed sleep on purpose: for locktime (net.ipv4.neigh.*.locktime, 1 s) after its last update a neighbour
    // entry ignores a new MAC, and no event marks the end of it. Past it, a forged ARP would override the entries
    // positiveControl() just refreshed, so tables unchanged below are the bridge's doing, not the kernel's lock.
    await new Promise((r) => setTimeout(r, 1200));
    const capture = new Watch(A.ns, 'tcpdump', ['-i', 'eth0', '-l', '-n', '-e', 'arp']);
    watches.push(capture);
    await capture.waitFor(/listening on/, 10_000, 'tcpdump in A');
    // C (root) takes both addresses and announces them, as gratuitous requests (-U) and replies (-A).
    await sh(C.ns, 'ip', ['addr', 'add', `${seg.ctl.ip}/32`, 'dev', 'eth0']);
    await sh(C.ns, 'ip', ['addr', 'add', `${A.ip}/32`, 'dev', 'eth0']);
    const arping = (ns: string, mode: '-U' | '-A', claim: string) => sh(ns, 'arping', ['-q', mode, '-c', '2', '-w', '2', '-I', 'eth0', '-s', claim, claim]).catch(() => '');
    await Promise.all([seg.ctl.ip, A.ip].flatMap((claim) => [arping(C.ns, '-U', claim), arping(C.ns, '-A', claim)]));
    await sh(C.ns, 'ip', ['addr', 'del', `${seg.ctl.ip}/32`, 'dev', 'eth0']);
    await sh(C.ns, 'ip', ['addr', 'del', `${A.ip}/32`, 'dev', 'eth0']);
    // Markers on open paths: C's honest announcement reaches the controller; the controller's reaches A.
    await Promise.all([arping(C.ns, '-U', C.ip), arping(seg.ctl.ns, '-U', seg.ctl.ip)]);
    await until(`the controller's neighbour entry for C (${C.mac})`, async () => (await neighbour(seg.ctl.ns, C.ip)) === C.mac, { timeoutMs: 2000, intervalMs: 50 });
    expect(await neighbour(seg.ctl.ns, C.ip)).toBe(C.mac);
    await capture.waitFor(new RegExp(`^.*${seg.ctl.mac} > .*Request who-has ${seg.ctl.ip.replace(/\./g, '\\.')} .*tell ${seg.ctl.ip.replace(/\./g, '\\.')}`), 5000, 'controller ARP marker at A');
    capture.stop();
    expect(await neighbour(seg.ctl.ns, A.ip)).toBe(A.mac);
    expect(await neighbour(A.ns, seg.ctl.ip)).toBe(seg.ctl.mac);
    expect(capture.lines.filter((l) => l.includes(C.mac))).toEqual([]);
  });

  it('(d) rogue DHCP: C\'s DHCP server offers A nothing; A gets the controller\'s offer', async () => {
    const dnsmasq = (h: Host, extra: string[]) =>
      new Watch(h.ns, 'dnsmasq', ['--no-daemon', '--conf-file=/dev/null', '--port=0', '--interface=eth0', '--bind-interfaces', '--user=root', `--dhcp-leasefile=${join(dir, `${h.name}.leases`)}`, '--pid-file', '--log-dhcp', ...extra]);
    const legit = dnsmasq(seg.ctl, [`--dhcp-range=${seg.prefix}.0,static,255.255.255.0`, `--dhcp-host=${A.mac},${A.ip}`]);
    const rogue = dnsmasq(C, [`--dhcp-range=${seg.prefix}.200,${seg.prefix}.210,255.255.255.0,1h`, '--dhcp-authoritative', '--no-ping', '--dhcp-broadcast', `--dhcp-option=option:router,${C.ip}`]);
    watches.push(legit, rogue);
    await legit.waitFor(/DHCP, static leases only/, 10_000, 'controller dnsmasq');
    await rogue.waitFor(/DHCP, IP range/, 10_000, 'rogue dnsmasq');
    const capture = new Watch(A.ns, 'tcpdump', ['-i', 'eth0', '-l', '-n', '-e', 'udp port 67 or udp port 68 or udp port 7777']);
    watches.push(capture);
    await capture.waitFor(/listening on/, 10_000, 'tcpdump in A');
    const script = join(dir, 'udhcpc.sh');
    writeFileSync(script, '#!/bin/sh\necho "udhcpc-event $1 ip=$ip serverid=$serverid router=$router"\n', { mode: 0o755 });
    const out = await sh(A.ns, 'udhcpc', ['-i', 'eth0', '-f', '-q', '-n', '-t', '4', '-T', '1', '-A', '1', '-s', script]);
    // Positive control: the lease came from the controller, with A's reserved address.
    expect(out).toMatch(new RegExp(`udhcpc-event bound ip=${A.ip} serverid=${seg.ctl.ip} `));
    await capture.waitFor(new RegExp(`^.*${seg.ctl.mac} > .*${seg.ctl.ip}\\.67 > `), 5000, 'controller offer at A');
    // Marker after the exchange: a datagram from the controller arrives at A, C's offers never did.
    await udpSend(seg.ctl.ns, A.ip, 7777, 'MARKER');
    await capture.waitFor(/\.7777: UDP/, 5000, 'marker at A');
    capture.stop();
    expect(capture.lines.filter((l) => /\.67 > /.test(l) && (l.includes(C.mac) || l.includes(`${C.ip}.67`)))).toEqual([]);
    legit.stop();
    rogue.stop();
  });

  it('(d2) rogue DHCP inside a private network: B (same tenant, same network as A) cannot answer A either', async () => {
    await net.join('A', 'tenant-1');
    await net.join('B', 'tenant-1');
    try {
      expect(await pings(A.ns, B.ip)).toBe(true); // they do share a network
      const legit = new Watch(seg.ctl.ns, 'dnsmasq', ['--no-daemon', '--conf-file=/dev/null', '--port=0', '--interface=eth0', '--bind-interfaces', '--user=root', `--dhcp-leasefile=${join(dir, 'ctl2.leases')}`, '--pid-file', `--dhcp-range=${seg.prefix}.0,static,255.255.255.0`, `--dhcp-host=${A.mac},${A.ip}`]);
      const rogue = new Watch(B.ns, 'dnsmasq', ['--no-daemon', '--conf-file=/dev/null', '--port=0', '--interface=eth0', '--bind-interfaces', '--user=root', `--dhcp-leasefile=${join(dir, 'b.leases')}`, '--pid-file', '--log-dhcp', `--dhcp-range=${seg.prefix}.200,${seg.prefix}.210,255.255.255.0,1h`, '--dhcp-authoritative', '--no-ping', '--dhcp-broadcast']);
      watches.push(legit, rogue);
      await legit.waitFor(/DHCP, static leases only/, 10_000, 'controller dnsmasq');
      await rogue.waitFor(/DHCP, IP range/, 10_000, 'rogue dnsmasq');
      const capture = new Watch(A.ns, 'tcpdump', ['-i', 'eth0', '-l', '-n', '-e', 'udp port 67 or udp port 68 or udp port 7777']);
      watches.push(capture);
      await capture.waitFor(/listening on/, 10_000, 'tcpdump in A');
      const script = join(dir, 'udhcpc2.sh');
      writeFileSync(script, '#!/bin/sh\necho "udhcpc-event $1 ip=$ip serverid=$serverid"\n', { mode: 0o755 });
      const out = await sh(A.ns, 'udhcpc', ['-i', 'eth0', '-f', '-q', '-n', '-t', '4', '-T', '1', '-A', '1', '-s', script]);
      expect(out).toMatch(new RegExp(`udhcpc-event bound ip=${A.ip} serverid=${seg.ctl.ip}`));
      // B's server did hear A and did answer (so the drop, not deafness, kept its offer away).
      await rogue.waitFor(new RegExp(`DHCPOFFER\\(eth0\\).*${A.mac}`), 5000, 'rogue offer sent by B');
      await capture.waitFor(new RegExp(`^.*${seg.ctl.mac} > .*${seg.ctl.ip}\\.67 > `), 5000, 'controller offer at A');
      // Marker after B's offer: B's next datagram to A arrives (same network), its offers did not.
      await udpSend(B.ns, A.ip, 7777, 'MARKER');
      await capture.waitFor(/\.7777: UDP/, 5000, 'marker from B at A');
      capture.stop();
      expect(capture.lines.filter((l) => /\.67 > /.test(l) && (l.includes(B.mac) || l.includes(`${B.ip}.67`)))).toEqual([]);
      legit.stop();
      rogue.stop();
    } finally {
      await net.leave('A');
      await net.leave('B');
    }
  });

  it('(e) C reaches A by no path (IPv4 ping, TCP, IPv6 link-local) and cannot eavesdrop on A\'s unicast', async () => {
    const aRec = await recorder(A.ns, ['tcp:7000']);
    watches.push(aRec);
    // C knows A's MACs already: its packets really go out, the bridge is what stops them.
    await sh(C.ns, 'ip', ['neigh', 'replace', A.ip, 'lladdr', A.mac, 'dev', 'eth0', 'nud', 'permanent']);
    await sh(C.ns, 'ip', ['-6', 'neigh', 'replace', A.ll, 'lladdr', A.mac, 'dev', 'eth0', 'nud', 'permanent']);
    expect(await pings(C.ns, A.ip)).toBe(false);
    expect(await tcpHello(C.ns, A.ip, 7000)).toBe('');
    expect(await pings(C.ns, A.ll, 'eth0')).toBe(false);
    // Marker: the controller does reach A's listener, and C's attempt left no trace there.
    expect(await tcpHello(seg.ctl.ns, A.ip, 7000)).toContain('hello 7000');
    await aRec.waitFor(new RegExp(`^tcp 7000 ${seg.ctl.ip.replace(/\./g, '\\.')} connect`));
    expect(aRec.lines.filter((l) => l.includes(C.ip))).toEqual([]);

    // Promiscuous C: A's exchange with the controller must not show up on C's wire.
    const capture = new Watch(C.ns, 'tcpdump', ['-i', 'eth0', '-l', '-n', '-A', 'udp']);
    watches.push(capture);
    await capture.waitFor(/listening on/, 10_000, 'tcpdump in C');
    const secret = `SECRET-${uniq()}`;
    expect(await udpAsk(A.ns, seg.ctl.ip, 69, secret)).toContain(`ack ${secret}`);
    const m = `MARKER-${uniq()}`;
    expect(await udpAsk(C.ns, seg.ctl.ip, 69, m)).toContain(`ack ${m}`);
    await capture.waitFor(new RegExp(`ack ${m}`), 5000, 'the controller\'s answer to C on C\'s wire');
    capture.stop();
    expect(capture.lines.filter((l) => l.includes(secret))).toEqual([]);
  });

  it('(f) a private network: A and B reach each other, C reaches neither, and leave ends it', async () => {
    expect(await pings(A.ns, B.ip)).toBe(false);
    await net.join('A', 'tenant-1');
    await net.join('B', 'tenant-1');
    expect((await net.state()).problems).toEqual([]);
    expect(await pings(A.ns, B.ip)).toBe(true);
    expect(await pings(B.ns, A.ip)).toBe(true);
    // An unchanged board attached again (what every inventory sync does) stays in its network.
    await net.attach({ boardId: A.name, port: A.port, mac: A.mac, ip: A.ip });
    expect((await net.state()).problems).toEqual([]);
    expect(await pings(A.ns, B.ip)).toBe(true);
    for (const h of [A, B]) {
      await sh(C.ns, 'ip', ['neigh', 'replace', h.ip, 'lladdr', h.mac, 'dev', 'eth0', 'nud', 'permanent']);
      expect(await pings(C.ns, h.ip)).toBe(false);
      expect(await pings(h.ns, C.ip)).toBe(false);
    }
    await marker(C);
    await net.leave('A');
    await net.leave('B');
    expect(await pings(A.ns, B.ip)).toBe(false);
    expect((await net.state()).problems).toEqual([]);
  });

  it('(h) a port nobody attached (a board not yet enrolled) gets nothing anywhere, not even DHCP, and steals no MAC', async () => {
    const atCtl = new Watch(seg.ctl.ns, 'tcpdump', ['-i', 'eth0', '-l', '-n', '-e', `ether src ${D.mac} or ether src ${A.mac}`]);
    watches.push(atCtl);
    await atCtl.waitFor(/listening on/, 10_000, 'tcpdump in the controller');
    await sh(D.ns, 'udhcpc', ['-i', 'eth0', '-f', '-q', '-n', '-t', '2', '-T', '1', '-A', '1', '-s', '/bin/true']).catch(() => '');
    // D as A: A's MAC on D's wire, in a DHCP request and a datagram. Were it learned, the bridge would send A's traffic to D.
    await sh(D.ns, 'ip', ['link', 'set', 'dev', 'eth0', 'address', A.mac]);
    await sh(D.ns, 'udhcpc', ['-i', 'eth0', '-f', '-q', '-n', '-t', '2', '-T', '1', '-A', '1', '-s', '/bin/true']).catch(() => '');
    await sh(D.ns, 'ip', ['neigh', 'replace', seg.ctl.ip, 'lladdr', seg.ctl.mac, 'dev', 'eth0', 'nud', 'permanent']);
    await udpSend(D.ns, seg.ctl.ip, 69, 'FROM-D');
    // Marker: A's datagram and its answer still flow (A's MAC was not moved to D's port).
    await positiveControl();
    await sh(D.ns, 'ip', ['link', 'set', 'dev', 'eth0', 'address', D.mac]);
    atCtl.stop();
    expect(sawUdp(69, 'FROM-D')).toEqual([]);
    expect(atCtl.lines.filter((l) => / > /.test(l) && (l.includes(D.mac) || l.includes('0.0.0.0.68')))).toEqual([]);
    // Nor does anything reach D: the controller's unicast to D's MAC and its broadcasts stop at D's port,
    // while the same reach A (the control).
    const atD = new Watch(D.ns, 'tcpdump', ['-i', 'eth0', '-l', '-n', '-e', `ether src ${seg.ctl.mac}`]);
    const atA = new Watch(A.ns, 'tcpdump', ['-i', 'eth0', '-l', '-n', '-e', `ether src ${seg.ctl.mac}`]);
    watches.push(atD, atA);
    await atD.waitFor(/listening on/, 10_000, 'tcpdump on D');
    await atA.waitFor(/listening on/, 10_000, 'tcpdump on A');
    await sh(seg.ctl.ns, 'ip', ['neigh', 'replace', D.ip, 'lladdr', D.mac, 'dev', 'eth0', 'nud', 'permanent']);
    await pings(seg.ctl.ns, D.ip);
    await pings(seg.ctl.ns, A.ip);
    await sh(seg.ctl.ns, 'arping', ['-c', '1', '-I', 'eth0', seg.ctl.ip]).catch(() => ''); // a broadcast
    await atA.waitFor(/ICMP echo request/, 10_000, "the controller's ping at A");
    await sh(seg.ctl.ns, 'ip', ['neigh', 'del', D.ip, 'dev', 'eth0']);
    atD.stop();
    atA.stop();
    expect(atD.lines.filter((l) => / > /.test(l))).toEqual([]);
  });

  it('(g) the controller answers boards only on its boot service ports', async () => {
    expect(await tcpHello(A.ns, seg.ctl.ip, 8775)).toContain('hello 8775');
    expect(await tcpHello(A.ns, seg.ctl.ip, 3260)).toContain('hello 3260');
    await positiveControl(); // TFTP
    expect(await tcpHello(A.ns, seg.ctl.ip, 2222)).toBe('');
    const s = `PROBE-${uniq()}`;
    await udpSend(A.ns, seg.ctl.ip, 5555, s);
    await marker(A);
    expect(sawUdp(5555, s)).toEqual([]);
    expect(ctlRec.lines.filter((l) => l.startsWith('tcp 2222 '))).toEqual([]);
  });
});

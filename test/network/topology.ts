/**
 * A throw-away boot segment for the network tests, all in namespaces named `dzn-<hex>` (the global
 * setup removes leftovers of a killed run): one namespace holding bridge `br0`; a controller namespace on
 * its uplink port (`up0` ↔ controller `eth0`, address .1); and one namespace per board, each a veth whose
 * peer (`p<name>`) is a bridge port. Nothing is created in the root namespace.
 */
import { randomBytes, randomInt } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ChildProcess } from 'node:child_process';
import { addBridge, addVethPair, createNetns, deleteNetns, execInNetns, ip, linkUp, randomMac, setAddr, setMac, setMaster } from '../../src/lab/netns.js';
import { run } from '../../src/network/exec.js';
import { until } from '../helpers/until.js';

export const RECORDER = fileURLToPath(new URL('./recorder.mjs', import.meta.url));

export interface Host {
  name: string;
  ns: string;
  ip: string;
  mac: string;
  /** The board's port on the bridge (boards only). */
  port: string;
  /** The IPv6 link-local address of its eth0. */
  ll: string;
}

export interface Segment {
  brNs: string;
  prefix: string;
  ctl: Host;
  boards: Record<string, Host>;
  cleanup(): Promise<void>;
}

const hex = (n = 4) => randomBytes(n).toString('hex');

/** A 10.250.X.0/24 no route on this host mentions. */
export async function freePrefix(): Promise<string> {
  const routes = await ip(['-4', 'route', 'show', 'table', 'all']);
  for (let i = 0; i < 100; i++) {
    const prefix = `10.250.${randomInt(0, 256)}`;
    if (!routes.includes(`${prefix}.`)) return prefix;
  }
  throw new Error('no free 10.250.X.0/24');
}

export async function createSegment(boardNames: string[]): Promise<Segment> {
  const prefix = await freePrefix();
  const brNs = `dzn-${hex()}`;
  const namespaces = [brNs];
  const seg: Segment = {
    brNs,
    prefix,
    ctl: { name: 'ctl', ns: `dzn-${hex()}`, ip: `${prefix}.1`, mac: randomMac(), port: 'up0', ll: '' },
    boards: {},
    cleanup: async () => {
      for (const ns of namespaces) await deleteNetns(ns).catch(() => {});
    },
  };
  namespaces.push(seg.ctl.ns);
  boardNames.forEach((name, i) => {
    const h = { name, ns: `dzn-${hex()}`, ip: `${prefix}.${11 + i}`, mac: randomMac(), port: `p${name.toLowerCase()}`, ll: '' };
    seg.boards[name] = h;
    namespaces.push(h.ns);
  });
  try {
    await createNetns(brNs);
    await addBridge('br0', brNs);
    await linkUp('br0', brNs);
    for (const h of [seg.ctl, ...Object.values(seg.boards)]) {
      await createNetns(h.ns);
      await addVethPair(h.port, 'eth0', { netns: brNs, peerNetns: h.ns });
      await setMaster(h.port, 'br0', brNs);
      await linkUp(h.port, brNs);
      await setMac('eth0', h.mac, h.ns);
      await setAddr('eth0', `${h.ip}/24`, h.ns);
      await linkUp('eth0', h.ns);
    }
    for (const h of [seg.ctl, ...Object.values(seg.boards)]) h.ll = await linkLocal(h.ns);
    return seg;
  } catch (err) {
    await seg.cleanup();
    throw err;
  }
}

/** eth0's IPv6 link-local address once duplicate address detection is done (no longer tentative). */
async function linkLocal(ns: string): Promise<string> {
  return until(`an IPv6 link-local address on eth0 in ${ns}`, async () => {
    const out = JSON.parse(await ip(['-j', '-6', 'addr', 'show', 'dev', 'eth0', 'scope', 'link'], ns)) as Array<{ addr_info: Array<{ local: string; tentative?: boolean }> }>;
    return out[0]?.addr_info.find((x) => !x.tentative)?.local;
  }, { timeoutMs: 5000, intervalMs: 50 });
}

/** A long-running process in a namespace whose stdout lines we can wait for. */
export class Watch {
  readonly lines: string[] = [];
  readonly child: ChildProcess;
  private err = '';
  constructor(ns: string, cmd: string, args: string[]) {
    this.child = execInNetns(ns, cmd, args);
    let buf = '';
    this.child.stdout?.on('data', (d: Buffer) => {
      buf += d.toString();
      const parts = buf.split('\n');
      buf = parts.pop()!;
      this.lines.push(...parts);
    });
    this.child.stderr?.on('data', (d: Buffer) => (this.err += d.toString()));
  }

  get stderr(): string {
    return this.err;
  }

  async waitFor(re: RegExp, timeoutMs = 10_000, what = String(re)): Promise<string> {
    return until(what, () => (this.lines.find((l) => re.test(l)) ?? (re.test(this.err) ? this.err : '')) || undefined, {
      timeoutMs,
      intervalMs: 25,
      detail: () => `saw:\n${this.lines.join('\n')}\nstderr: ${this.err}`,
    });
  }

  stop(): void {
    this.child.kill('SIGKILL');
  }
}

/** The controller's listeners (or a board's), started and ready. */
export async function recorder(ns: string, specs: string[]): Promise<Watch> {
  const w = new Watch(ns, process.execPath, [RECORDER, ...specs]);
  await w.waitFor(/^ready$/, 10_000, `recorder ready in ${ns}`);
  return w;
}

/** Sends one UDP datagram (optionally from a given local address); never waits for an answer. */
export async function udpSend(ns: string, dst: string, port: number, msg: string, bind?: string): Promise<void> {
  await run('socat', ['-u', 'STDIN', `UDP4-SENDTO:${dst}:${port}${bind ? `,bind=${bind}` : ''}`], { netns: ns, input: msg + '\n' });
}

/** Sends a datagram and returns the answer (or '' when none came within 2 s). */
export async function udpAsk(ns: string, dst: string, port: number, msg: string): Promise<string> {
  return run('socat', ['-t', '2', '-T', '2', '-', `UDP4:${dst}:${port}`], { netns: ns, input: msg + '\n' }).catch(() => '');
}

/** Connects, returns the greeting, or '' when the connection did not happen within 2 s. */
export async function tcpHello(ns: string, dst: string, port: number): Promise<string> {
  return run('socat', ['-t', '2', '-T', '2', '-', `TCP4:${dst}:${port},connect-timeout=2`], { netns: ns, input: '' }).catch(() => '');
}

/** True when `ping -c 2` got an answer. */
export async function pings(ns: string, dst: string, v6iface?: string): Promise<boolean> {
  const args = v6iface ? ['-6', '-c', '2', '-i', '0.2', '-W', '1', `${dst}%${v6iface}`] : ['-c', '2', '-i', '0.2', '-W', '1', dst];
  return run('ping', args, { netns: ns, timeoutMs: 10_000 }).then(
    () => true,
    () => false,
  );
}

/** Runs a command in a namespace, throwing on failure. */
export function sh(ns: string, cmd: string, args: string[]): Promise<string> {
  return run(cmd, args, { netns: ns });
}

export function uniq(): string {
  return hex(3);
}

// Shared by the attack tests (test/network/tor-example.test.ts; bridge-attacks.test.ts has older copies).

/** `addr` as a regular expression that matches it literally. */
export const reAddr = (addr: string) => addr.replace(/\./g, '\\.');

/** What `rec` (a recorder) logged of UDP datagrams to `port` with exactly this payload. */
export function udpSeen(rec: Watch, port: number, text: string): string[] {
  return rec.lines.filter((l) => l.startsWith(`udp ${port} `) && l.endsWith(` ${text}`));
}

/**
 * A marker on a path that is open: `from` sends a fresh datagram to `rec`, listening on UDP `port` at
 * `to`, and it arrives from `from`'s address. Sent after an attack, it shows the attack's packets had
 * their chance to arrive too.
 */
export async function udpMarker(rec: Watch, from: Host, to: string, port: number): Promise<void> {
  const m = `MARKER-${uniq()}`;
  await udpSend(from.ns, to, port, m);
  await rec.waitFor(new RegExp(`^udp ${port} ${reAddr(from.ip)} ${m}$`), 5000, `marker from ${from.name}`);
}

/** Pins a neighbour entry in `ns`, so packets to `addr` really leave (no ARP needed): the bridge is what stops them. */
export async function pinNeighbour(ns: string, addr: string, mac: string, dev = 'eth0'): Promise<void> {
  await sh(ns, 'ip', ['neigh', 'replace', addr, 'lladdr', mac, 'dev', dev, 'nud', 'permanent']);
}

/** tcpdump on `dev` in `ns` (link-level headers, no name lookups), listening when this resolves; kept in `track` for clean-up. */
export async function capture(ns: string, filter: string, track: Watch[], dev = 'eth0'): Promise<Watch> {
  const w = new Watch(ns, 'tcpdump', ['-i', dev, '-l', '-n', '-e', filter]);
  track.push(w);
  await w.waitFor(/listening on/, 10_000, `tcpdump on ${dev} in ${ns}`);
  return w;
}

/**
 * dnsmasq as a DHCP server only (no DNS), on eth0 of `h`, in the foreground, its lease file under `dir`,
 * logging every DHCP message; serving when this resolves; kept in `track` for clean-up.
 */
export async function dhcpServer(h: Host, dir: string, extra: string[], track: Watch[]): Promise<Watch> {
  const w = new Watch(h.ns, 'dnsmasq', ['--no-daemon', '--conf-file=/dev/null', '--port=0', '--interface=eth0', '--bind-interfaces', '--user=root', `--dhcp-leasefile=${join(dir, `${h.name}-${uniq()}.leases`)}`, '--pid-file', '--log-dhcp', ...extra]);
  track.push(w);
  await w.waitFor(/DHCP, (static leases only|IP range)/, 10_000, `dnsmasq in ${h.name}`);
  return w;
}

/** One DHCP exchange by udhcpc on eth0 of `h` (4 discovers, 1 s apart); prints `udhcpc-event <event> ip=… serverid=…`. */
export async function dhcpLease(h: Host, dir: string): Promise<string> {
  const script = join(dir, 'udhcpc-event.sh');
  writeFileSync(script, '#!/bin/sh\necho "udhcpc-event $1 ip=$ip serverid=$serverid router=$router"\n', { mode: 0o755 });
  return sh(h.ns, 'udhcpc', ['-i', 'eth0', '-f', '-q', '-n', '-t', '4', '-T', '1', '-A', '1', '-s', script]);
}

/**
 * A throw-away boot segment for the network tests, all in namespaces named `dzn-<hex>` (the global
 * setup removes leftovers of a killed run): one namespace holding bridge `br0`; a controller namespace on
 * its uplink port (`up0` ↔ controller `eth0`, address .1); and one namespace per board, each a veth whose
 * peer (`p<name>`) is a bridge port. Nothing is created in the root namespace.
 */
import { randomBytes, randomInt } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import type { ChildProcess } from 'node:child_process';
import { addBridge, addVethPair, createNetns, deleteNetns, execInNetns, ip, linkUp, randomMac, setAddr, setMac, setMaster } from '../../src/lab/netns.js';
import { run } from '../../src/network/exec.js';

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

async function linkLocal(ns: string): Promise<string> {
  for (let i = 0; i < 100; i++) {
    const out = JSON.parse(await ip(['-j', '-6', 'addr', 'show', 'dev', 'eth0', 'scope', 'link'], ns)) as Array<{ addr_info: Array<{ local: string; tentative?: boolean }> }>;
    const a = out[0]?.addr_info.find((x) => !x.tentative);
    if (a) return a.local;
    await sleep(50);
  }
  throw new Error(`no IPv6 link-local address on eth0 in ${ns}`);
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

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
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.lines.find((l) => re.test(l)) ?? (re.test(this.err) ? this.err : undefined);
      if (hit) return hit;
      if (Date.now() > deadline) throw new Error(`no ${what} within ${timeoutMs} ms; saw:\n${this.lines.join('\n')}\nstderr: ${this.err}`);
      await sleep(25);
    }
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

/**
 * Thin helpers around iproute2 for building throw-away network topologies (namespaces, veth
 * pairs, bridges, taps). Everything goes through execFile with an argv array — never a shell
 * string — and every name is validated first, so a name can't smuggle in an `ip` option.
 * Deletions are idempotent so cleanup paths can call them unconditionally.
 */
import { execFile, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

/** Linux interface names: at most 15 bytes (IFNAMSIZ-1), no '/', no whitespace. */
const IFNAME_RE = /^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,14}$/;
/** `ip netns` names become files under /run/netns. */
const NETNS_RE = /^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,63}$/;
const CIDR_RE = /^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/;
const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

export function assertIfName(name: string): void {
  if (!IFNAME_RE.test(name)) throw new Error(`invalid interface name: ${JSON.stringify(name)}`);
}
export function assertNetnsName(name: string): void {
  if (!NETNS_RE.test(name)) throw new Error(`invalid netns name: ${JSON.stringify(name)}`);
}

/** A short random name that fits IFNAMSIZ, e.g. `dzt-3f9a1c`. */
export function randomName(prefix = 'dzt', hexChars = 6): string {
  const name = `${prefix}-${randomBytes(Math.ceil(hexChars / 2)).toString('hex').slice(0, hexChars)}`;
  assertIfName(name);
  return name;
}

/** A random locally administered unicast MAC (bit 1 of the first octet set, bit 0 clear). */
export function randomMac(): string {
  const b = randomBytes(6);
  b[0] = (b[0]! & 0xfc) | 0x02;
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

/** Runs `ip [-n ns] args...` and returns stdout. Throws with ip's stderr on failure. */
export async function ip(args: string[], netns?: string): Promise<string> {
  const argv = netns ? (assertNetnsName(netns), ['-n', netns, ...args]) : args;
  try {
    const { stdout } = await execFileP('ip', argv, { timeout: 15_000 });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`ip ${argv.join(' ')}: ${(e.stderr ?? e.message).trim()}`);
  }
}

export function netnsExists(name: string): boolean {
  assertNetnsName(name);
  return existsSync(`/run/netns/${name}`);
}

/** Creates the namespace (no-op if it exists) and brings its loopback up. */
export async function createNetns(name: string): Promise<void> {
  assertNetnsName(name);
  if (!netnsExists(name)) await ip(['netns', 'add', name]);
  await ip(['link', 'set', 'dev', 'lo', 'up'], name);
}

/** PIDs of processes living in the namespace (`ip netns pids`). */
export async function netnsPids(name: string): Promise<number[]> {
  if (!netnsExists(name)) return [];
  const out = await ip(['netns', 'pids', name]).catch(() => '');
  return out.split(/\s+/).filter(Boolean).map(Number).filter((n) => Number.isInteger(n) && n > 0);
}

/**
 * Deletes the namespace; no-op if it is already gone. A namespace stays alive while a process
 * is inside it, so by default the processes in it (which only our own runs put there) are
 * killed first — otherwise a leaked client would keep its veth and addresses around.
 */
export async function deleteNetns(name: string, opts: { killProcesses?: boolean } = {}): Promise<void> {
  assertNetnsName(name);
  if (!netnsExists(name)) return;
  if (opts.killProcesses ?? true) {
    for (const pid of await netnsPids(name)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
  }
  await ip(['netns', 'delete', name]).catch((err: Error) => {
    if (netnsExists(name)) throw err;
  });
}

export async function linkExists(ifname: string, netns?: string): Promise<boolean> {
  assertIfName(ifname);
  try {
    await ip(['link', 'show', 'dev', ifname], netns);
    return true;
  } catch {
    return false;
  }
}

/** Deletes a link (veth: both ends go); no-op if it doesn't exist. */
export async function deleteLink(ifname: string, netns?: string): Promise<void> {
  if (!(await linkExists(ifname, netns))) return;
  await ip(['link', 'delete', 'dev', ifname], netns).catch(async (err: Error) => {
    if (await linkExists(ifname, netns)) throw err;
  });
}

/** Creates a veth pair `a`<->`b`, optionally putting `b` straight into namespace `peerNetns`. */
export async function addVethPair(a: string, b: string, opts: { netns?: string; peerNetns?: string } = {}): Promise<void> {
  assertIfName(a);
  assertIfName(b);
  const peer = ['peer', 'name', b, ...(opts.peerNetns ? (assertNetnsName(opts.peerNetns), ['netns', opts.peerNetns]) : [])];
  await ip(['link', 'add', 'name', a, 'type', 'veth', ...peer], opts.netns);
}

/** Moves an interface from `fromNetns` (default: ours) into namespace `netns`. */
export async function moveToNetns(ifname: string, netns: string, fromNetns?: string): Promise<void> {
  assertIfName(ifname);
  assertNetnsName(netns);
  await ip(['link', 'set', 'dev', ifname, 'netns', netns], fromNetns);
}

export async function addBridge(name: string, netns?: string): Promise<void> {
  assertIfName(name);
  if (await linkExists(name, netns)) return;
  await ip(['link', 'add', 'name', name, 'type', 'bridge'], netns);
}

/** Creates a persistent tap device (for QEMU `-netdev tap,ifname=...,script=no`). */
export async function addTap(name: string, netns?: string): Promise<void> {
  assertIfName(name);
  if (await linkExists(name, netns)) return;
  await ip(['tuntap', 'add', 'dev', name, 'mode', 'tap'], netns);
}

/** Enslaves `ifname` to `bridge`. */
export async function setMaster(ifname: string, bridge: string, netns?: string): Promise<void> {
  assertIfName(ifname);
  assertIfName(bridge);
  await ip(['link', 'set', 'dev', ifname, 'master', bridge], netns);
}

/** Adds an address in CIDR form (`10.200.1.1/24`); an already present address is not an error. */
export async function setAddr(ifname: string, cidr: string, netns?: string): Promise<void> {
  assertIfName(ifname);
  if (!CIDR_RE.test(cidr)) throw new Error(`invalid CIDR: ${cidr}`);
  await ip(['addr', 'replace', cidr, 'dev', ifname], netns);
}

export async function setMac(ifname: string, mac: string, netns?: string): Promise<void> {
  assertIfName(ifname);
  if (!MAC_RE.test(mac)) throw new Error(`invalid MAC: ${mac}`);
  await ip(['link', 'set', 'dev', ifname, 'address', mac], netns);
}

export async function linkUp(ifname: string, netns?: string): Promise<void> {
  assertIfName(ifname);
  await ip(['link', 'set', 'dev', ifname, 'up'], netns);
}

/** Adds a route, e.g. `addRoute('default', '10.200.1.1', ns)` or `addRoute('10.9.0.0/24', undefined, ns, 'veth0')`. */
export async function addRoute(dest: string, via: string | undefined, netns?: string, dev?: string): Promise<void> {
  if (dest !== 'default' && !CIDR_RE.test(dest)) throw new Error(`invalid route destination: ${dest}`);
  if (dev) assertIfName(dev);
  const args = ['route', 'replace', dest, ...(via ? ['via', via] : []), ...(dev ? ['dev', dev] : [])];
  await ip(args, netns);
}

/** The MAC address of an interface (lowercase). */
export async function getMac(ifname: string, netns?: string): Promise<string> {
  assertIfName(ifname);
  const out = await ip(['-j', 'link', 'show', 'dev', ifname], netns);
  const parsed = JSON.parse(out) as Array<{ address?: string }>;
  const mac = parsed[0]?.address;
  if (!mac) throw new Error(`no MAC for ${ifname}`);
  return mac.toLowerCase();
}

/**
 * Starts `cmd args...` inside the namespace (`ip netns exec`, which execs in place, so the
 * returned ChildProcess's pid is the command's own pid and killing it kills the command).
 */
export function execInNetns(netns: string, cmd: string, args: string[], opts: SpawnOptions = {}): ChildProcess {
  assertNetnsName(netns);
  return spawn('ip', ['netns', 'exec', netns, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

/** Runs a command in the namespace to completion; SIGKILLs it after `timeoutMs`. Never rejects on exit status. */
export function runInNetns(netns: string, cmd: string, args: string[], opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = execInNetns(netns, cmd, args, opts.env ? { env: opts.env } : {});
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, opts.timeoutMs ?? 30_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, timedOut });
    });
  });
}

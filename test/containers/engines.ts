/**
 * Real Docker engines and tools for the container tests (no mocks): wraps test/containers/dockerd.sh,
 * builds the armhf image (cached), makes SSH keys and runs the OpenSSH client.
 */
import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ContainerHostConfig } from '../../src/containers/host.js';
import { loadBuiltImage, type ContainerImageSource } from '../../src/containers/images.js';
import { requireRoot, requireTools } from '../helpers/tools.js';
import { until } from '../helpers/until.js';

const HERE = resolve(fileURLToPath(import.meta.url), '..');
const REPO = resolve(HERE, '../..');
const SCRIPT = join(HERE, 'dockerd.sh');

/** Everything these tests run; a missing one fails the test with the install hint (never a skip). */
export function requireContainerTools(): void {
  requireRoot();
  requireTools('dockerd', 'containerd', 'runc', 'docker-proxy', 'qemu-arm-static', 'update-binfmts', 'ssh', 'ssh-keygen', 'curl', 'nsenter', 'openssl', 'ip', 'iptables', 'dpkg-deb', 'tar', 'mkfs.btrfs', 'mkfs.ext4', 'stat');
}

function script(args: string[]): string {
  try {
    return execFileSync('bash', [SCRIPT, ...args], { encoding: 'utf8', timeout: 240_000, stdio: ['ignore', 'pipe', 'pipe'] }).trim();
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`dockerd.sh ${args.join(' ')} failed: ${(e.stderr ?? e.message).trim()}`);
  }
}

/** The shared local engine (host netns, unix socket), started once and left running. */
export function startSharedEngine(): string {
  return script(['start']);
}

export interface RemoteEngine {
  name: string;
  socket: string;
  host: string;
  port: number;
  ca: string;
  cert: string;
  key: string;
  sshHost: string;
  storageDriver: string;
}

/** An engine in its own netns, reached over TCP+TLS like a real board (see dockerd.sh); its data root on its own btrfs or ext4 when asked. */
export function startRemoteEngine(name: string, opts: { btrfs?: boolean; ext4?: boolean; userns?: boolean } = {}): RemoteEngine {
  const file = script(['start-remote', name, ...(opts.btrfs ? ['--btrfs'] : opts.ext4 ? ['--ext4'] : []), ...(opts.userns ? ['--userns'] : [])]);
  return JSON.parse(readFileSync(file, 'utf8')) as RemoteEngine;
}

export function stopEngine(name: string): void {
  script(['stop', name]);
}

export function destroyEngine(name: string): void {
  script(['destroy', name]);
}

/** Host config for a remote engine: TLS with the files dockerd.sh made. */
export function remoteHostConfig(e: RemoteEngine, extra: Partial<ContainerHostConfig> = {}): ContainerHostConfig {
  return {
    id: e.name,
    host: e.host,
    port: e.port,
    ca: e.ca,
    cert: e.cert,
    key: e.key,
    sshHost: e.sshHost,
    platforms: ['linux/arm/v7'],
    ...extra,
  };
}

/** The armhf base image (images/container-armhf/build.sh: cached, a no-op when up to date). */
export function armhfImage(): ContainerImageSource {
  execFileSync('bash', [join(REPO, 'images/container-armhf/build.sh')], { stdio: ['ignore', 'ignore', 'pipe'], timeout: 600_000 });
  return loadBuiltImage();
}

export interface KeyPair {
  privateKey: string;
  publicKey: string;
}

export function sshKeyPair(comment = 'dozen-test'): KeyPair {
  const dir = mkdtempSync(join(tmpdir(), 'dozen-ssh-'));
  const privateKey = join(dir, 'id_ed25519');
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', privateKey]);
  return { privateKey, publicKey: readFileSync(`${privateKey}.pub`, 'utf8').trim() };
}

export interface SshResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** `ssh -i key -p port root@host cmd`, non-interactive, bounded by timeoutMs. */
export function ssh(key: string, host: string, port: number, cmd: string, timeoutMs = 20_000): Promise<SshResult> {
  const args = [
    '-i', key, '-p', String(port),
    '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'BatchMode=yes',
    '-o', 'IdentitiesOnly=yes', '-o', 'ConnectTimeout=5', '-o', 'LogLevel=ERROR',
    `root@${host}`, cmd,
  ];
  return new Promise((res) => {
    execFile('ssh', args, { timeout: timeoutMs, encoding: 'utf8' }, (err, stdout, stderr) => {
      const code = err ? ((err as { code?: number | string }).code ?? null) : 0;
      res({ code: typeof code === 'number' ? code : null, stdout, stderr });
    });
  });
}

/** Retries ssh until it succeeds (the container's init needs a moment) or the deadline passes. */
export async function waitForSsh(key: string, host: string, port: number, cmd: string, timeoutMs = 30_000): Promise<SshResult> {
  const deadline = Date.now() + timeoutMs;
  let last: SshResult = { code: null, stdout: '', stderr: 'never tried' };
  return until(
    `ssh root@${host}:${port} '${cmd}' succeeding`,
    async () => {
      last = await ssh(key, host, port, cmd, Math.max(1_000, deadline - Date.now()));
      return last.code === 0 ? last : undefined;
    },
    { timeoutMs, intervalMs: 200, detail: () => `last: code ${last.code}, ${last.stderr.trim()}` },
  );
}

/** A short random suffix for tenant and lease ids, so runs and files never collide. */
export function uniq(): string {
  return randomBytes(3).toString('hex');
}

/**
 * Where the kernel keeps a process's limits, on whichever cgroup layout the machine has: v1 (one
 * hierarchy per controller, e.g. /sys/fs/cgroup/memory/docker/<id>), v2 (one unified hierarchy, e.g.
 * /sys/fs/cgroup/system.slice/docker-<id>.scope) or hybrid. Read from the process's own
 * /proc/<pid>/cgroup and the mount table, never from a guessed path.
 */
export interface ProcessCgroups {
  /** 1 or 2, per controller. */
  version: Record<'memory' | 'pids' | 'cpu', 1 | 2>;
  dir: Record<'memory' | 'pids' | 'cpu', string>;
}

export function processCgroups(pid: number): ProcessCgroups {
  type Mount = { root: string; at: string };
  const v1 = new Map<string, Mount>(); // controller → its hierarchy's mount
  let v2: Mount | null = null;
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const [pre, post] = line.split(' - ');
    if (!pre || !post) continue;
    const [, , , root, at] = pre.split(' ');
    const [fstype, , superOpts = ''] = post.split(' ');
    if (fstype === 'cgroup2') v2 ??= { root: root!, at: at! };
    if (fstype === 'cgroup') for (const o of superOpts.split(',')) if (!v1.has(o)) v1.set(o, { root: root!, at: at! });
  }
  // A cgroup path as the process sees it, under the mount (which may show a subtree only).
  const under = (m: Mount, path: string) => join(m.at, m.root === '/' ? path : path.startsWith(m.root) ? path.slice(m.root.length) : path);
  const lines = readFileSync(`/proc/${pid}/cgroup`, 'utf8').trim().split('\n').map((l) => /^(\d+):([^:]*):(.*)$/.exec(l)!);
  const version = {} as ProcessCgroups['version'];
  const dir = {} as ProcessCgroups['dir'];
  for (const c of ['memory', 'pids', 'cpu'] as const) {
    const own = lines.find((m) => m[2]!.split(',').includes(c));
    if (own && v1.has(c)) {
      version[c] = 1;
      dir[c] = under(v1.get(c)!, own[3]!);
      continue;
    }
    const unified = lines.find((m) => m[1] === '0' && m[2] === '');
    if (!unified || !v2) throw new Error(`process ${pid}: no cgroup for ${c} (cgroup: ${lines.map((m) => m[0]).join('; ')})`);
    version[c] = 2;
    dir[c] = under(v2, unified[3]!);
  }
  return { version, dir };
}

const read = (dir: string, file: string) => readFileSync(join(dir, file), 'utf8').trim();
const field = (text: string, key: string) => Number(new RegExp(`^${key} (\\d+)$`, 'm').exec(text)?.[1] ?? NaN);

/** What the kernel enforces for the process: memory limit (bytes; null = none), CPU quota (CPUs; null = none), pids. */
export function kernelLimits(cg: ProcessCgroups): { memoryBytes: number | null; cpus: number | null; pidsMax: number | null } {
  const mem = cg.version.memory === 2 ? read(cg.dir.memory, 'memory.max') : read(cg.dir.memory, 'memory.limit_in_bytes');
  let cpus: number | null;
  if (cg.version.cpu === 2) {
    const [quota, period] = read(cg.dir.cpu, 'cpu.max').split(' ');
    cpus = quota === 'max' ? null : Number(quota) / Number(period);
  } else {
    const quota = Number(read(cg.dir.cpu, 'cpu.cfs_quota_us'));
    cpus = quota < 0 ? null : quota / Number(read(cg.dir.cpu, 'cpu.cfs_period_us'));
  }
  const pids = read(cg.dir.pids, 'pids.max');
  // v1 says "no limit" with a huge page-aligned number (LONG_MAX rounded down), v2 with "max".
  const memoryBytes = mem === 'max' || Number(mem) >= 2 ** 62 ? null : Number(mem);
  return { memoryBytes, cpus, pidsMax: pids === 'max' ? null : Number(pids) };
}

/** How many times the kernel OOM-killed a process in the cgroup (memory.events v2, memory.oom_control v1). */
export function oomKills(cg: ProcessCgroups): number {
  return field(read(cg.dir.memory, cg.version.memory === 2 ? 'memory.events' : 'memory.oom_control'), 'oom_kill');
}

/** The pids controller's state: current tasks and how often a fork was refused at the limit. */
export function pidsState(cg: ProcessCgroups): { max: string; current: number; maxEvents: number } {
  return { max: read(cg.dir.pids, 'pids.max'), current: Number(read(cg.dir.pids, 'pids.current')), maxEvents: field(read(cg.dir.pids, 'pids.events'), 'max') };
}

/**
 * The servers under test, each in processes of their own on the storm's host address, and what they
 * cost: CPU seconds and peak RSS of their process trees, read from /proc (in.tftpd forks a process per
 * transfer, so a tree is summed; the kernel's VmHWM of each root is reset per pass via clear_refs).
 *
 *   ours      startServer() (bench/storm/ours-server.ts), shipped TFTP defaults (maxTransfers 1024)
 *   ours-max  the same with tftp.maxTransfers = N (as dnsmasq gets --tftp-max ≥ N)
 *   dnsmasq   DHCP + TFTP, one process
 *   kea       kea-dhcp4 (memfile leases) + tftp-hpa in.tftpd
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, readlinkSync, rmdirSync, writeFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { REPO_ROOT } from '../../src/config.js';
import { SERVER_IP, STORM_SUBNET, type StormBoard } from './plan.js';
import type { ServedFiles } from './files.js';

export type ServerName = 'ours' | 'ours-max' | 'dnsmasq' | 'kea';
export const SERVER_NAMES: ServerName[] = ['ours', 'ours-max', 'dnsmasq', 'kea'];

export interface RunningServer {
  name: ServerName;
  /** Root processes whose trees are measured. */
  pids: number[];
  /** Their cpuacct group (every process they fork is in it). */
  cpu: CpuGroup;
  /** What it was configured with, for the report. */
  settings: Record<string, unknown>;
  /** Server-side counters (ours only). */
  stats?: () => Promise<Record<string, unknown>>;
  /** Ours: its API and the boards with a busy console, for the probe (bench/storm/api-probe.ts). */
  api?: { url: string; token: string; consoleBoards: string[] };
  stop(): Promise<void>;
}

const CLK_TCK = 100; // getconf CLK_TCK on Linux
/** Every child we spawn, so an interrupted run can kill them. */
export const children = new Set<ChildProcess>();

function track(p: ChildProcess, what: string, log: string[]): ChildProcess {
  children.add(p);
  p.once('exit', () => children.delete(p));
  p.once('error', (e) => log.push(`${what}: ${e.message}`));
  const keep = (d: Buffer): void => {
    log.push(d.toString());
    if (log.length > 200) log.splice(0, log.length - 200);
  };
  p.stdout?.on('data', keep);
  p.stderr?.on('data', keep);
  return p;
}

async function kill(p: ChildProcess | undefined): Promise<void> {
  if (!p || p.exitCode !== null || p.signalCode !== null) return;
  const exited = new Promise<void>((r) => p.once('exit', () => r()));
  p.kill('SIGTERM');
  const t = setTimeout(() => p.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(t);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** UDP sockets bound by a process: "addr:port" from /proc/net/udp matched against its fds' inodes. */
function boundPorts(pid: number): Set<number> {
  const inodes = new Set<string>();
  try {
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
        if (m) inodes.add(m[1]!);
      } catch {
        /* fd closed meanwhile */
      }
    }
  } catch {
    return new Set();
  }
  const ports = new Set<number>();
  for (const line of readFileSync('/proc/net/udp', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length > 9 && inodes.has(f[9]!)) ports.add(parseInt(f[1]!.split(':')[1]!, 16));
  }
  return ports;
}


async function waitPorts(p: ChildProcess, ports: number[], what: string, log: string[]): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (p.exitCode !== null || p.signalCode !== null) throw new Error(`${what} exited: ${log.join('').slice(-800)}`);
    const got = boundPorts(p.pid!);
    if (ports.every((x) => got.has(x))) return;
    await sleep(50);
  }
  throw new Error(`${what} did not bind UDP ${ports.join(', ')} within 10 s: ${log.join('').slice(-800)}`);
}

export async function startOurs(dir: string, boards: StormBoard[], maxTransfers?: number, consoleSerial?: string): Promise<RunningServer> {
  const log: string[] = [];
  const dataDir = join(dir, `ours-${maxTransfers ?? 'default'}`);
  await mkdir(dataDir, { recursive: true });
  const p = track(
    // BENCH_STORM_PROF=<dir>: V8 CPU profiles of our server's threads there (chrome://inspect, or speedscope).
    spawn(process.execPath, [...(process.env.BENCH_STORM_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_STORM_PROF}`] : []), '--import', 'tsx', join(REPO_ROOT, 'bench/storm/ours-server.ts'), JSON.stringify({ dataDir, maxTransfers, boards, consoleSerial })], {
      cwd: REPO_ROOT,
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      env: { ...process.env, LOG_LEVEL: process.env.BENCH_STORM_LOG_LEVEL ?? 'warn' },
    }),
    'ours',
    log,
  );
  const cpu = new CpuGroup(maxTransfers ? 'ours-max' : 'ours');
  cpu.add(p.pid!);
  const ready = await new Promise<Record<string, unknown>>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`our server not ready in 600 s: ${log.join('').slice(-800)}`)), 600_000);
    p.on('message', (m: Record<string, unknown>) => {
      if (m.ready) {
        clearTimeout(t);
        resolve(m);
      }
    });
    p.once('exit', (code) => {
      clearTimeout(t);
      reject(new Error(`our server exited (${code}): ${log.join('').slice(-1500)}`));
    });
  });
  const stats = (): Promise<Record<string, unknown>> =>
    new Promise((resolve) => {
      const t = setTimeout(() => resolve({}), 5000);
      const on = (m: Record<string, unknown>): void => {
        if (!m.stats) return;
        clearTimeout(t);
        p.off('message', on);
        resolve(m.stats as Record<string, unknown>);
      };
      p.on('message', on);
      p.send('stats');
    });
  return {
    name: maxTransfers ? 'ours-max' : 'ours',
    pids: [p.pid!],
    cpu,
    settings: { enrollMs: ready.enrollMs, enrolled: ready.boards, boardStates: ready.states, image: ready.image, tftp: ready.tftp, network: 'none', lab: false },
    stats,
    api: ready.api as RunningServer['api'],
    stop: async () => {
      if (p.connected) p.send('stop');
      const t = setTimeout(() => p.kill('SIGKILL'), 10_000);
      if (p.exitCode === null && p.signalCode === null) await new Promise<void>((r) => p.once('exit', () => r()));
      clearTimeout(t);
      cpu.remove();
    },
  };
}

export async function startDnsmasq(dir: string, hostIf: string, boards: StormBoard[], tftpRoot: string, served: ServedFiles): Promise<RunningServer> {
  const log: string[] = [];
  const tftpMax = Math.max(50, boards.length + 16);
  const conf = [
    'port=0',
    'no-resolv',
    'no-hosts',
    `interface=${hostIf}`,
    'bind-interfaces',
    'no-ping',
    `dhcp-range=${STORM_SUBNET.split('/')[0]},static,255.255.252.0,1h`,
    `dhcp-leasefile=${join(dir, 'dnsmasq.leases')}`,
    `pid-file=${join(dir, 'dnsmasq.pid')}`,
    'enable-tftp',
    `tftp-root=${tftpRoot}`,
    `tftp-max=${tftpMax}`,
    'quiet-dhcp',
    'quiet-tftp',
    'log-facility=-',
    ...boards.flatMap((b) => [`dhcp-host=${b.mac},set:${b.id},${b.ip},${b.id}`, `dhcp-boot=tag:${b.id},${served.refBootfile[b.id]},storm,${SERVER_IP}`]),
  ];
  const file = join(dir, 'dnsmasq.conf');
  writeFileSync(file, conf.join('\n') + '\n');
  const p = track(spawn('dnsmasq', ['-k', `--conf-file=${file}`], { stdio: ['ignore', 'pipe', 'pipe'] }), 'dnsmasq', log);
  const cpu = new CpuGroup('dnsmasq');
  cpu.add(p.pid!);
  await waitPorts(p, [67, 69], 'dnsmasq', log);
  return {
    name: 'dnsmasq',
    pids: [p.pid!],
    cpu,
    settings: { version: firstLine('dnsmasq', ['--version']), args: ['-k', '--conf-file'], conf: conf.slice(0, 15), perBoard: 'dhcp-host=<mac>,set:<id>,<ip>,<id> + dhcp-boot=tag:<id>,<bootfile>,storm,10.98.0.1' },
    stop: async () => {
      await kill(p);
      cpu.remove();
    },
  };
}

export async function startKea(dir: string, hostIf: string, boards: StormBoard[], tftpRoot: string, served: ServedFiles): Promise<RunningServer> {
  const log: string[] = [];
  const conf = {
    Dhcp4: {
      'interfaces-config': { interfaces: [hostIf], 'dhcp-socket-type': 'udp' },
      'lease-database': { type: 'memfile', persist: true, name: join(dir, 'kea-leases4.csv'), 'lfc-interval': 0 },
      'valid-lifetime': 3600,
      'host-reservation-identifiers': ['hw-address'],
      subnet4: [
        {
          id: 1,
          subnet: STORM_SUBNET,
          'next-server': SERVER_IP,
          'option-data': [{ name: 'tftp-server-name', data: SERVER_IP }],
          reservations: boards.map((b) => ({ 'hw-address': b.mac, 'ip-address': b.ip, hostname: b.id, 'boot-file-name': served.refBootfile[b.id] })),
        },
      ],
      loggers: [{ name: 'kea-dhcp4', output_options: [{ output: 'stderr' }], severity: 'WARN' }],
    },
  };
  const file = join(dir, 'kea-dhcp4.json');
  writeFileSync(file, JSON.stringify(conf, null, 1));
  const env = { ...process.env, KEA_PIDFILE_DIR: dir, KEA_LOCKFILE_DIR: dir };
  const kea = track(spawn('kea-dhcp4', ['-c', file], { stdio: ['ignore', 'pipe', 'pipe'], env }), 'kea-dhcp4', log);
  const tftpArgs = ['-L', '-s', tftpRoot, '-a', `${SERVER_IP}:69`];
  const tftpd = track(spawn('in.tftpd', tftpArgs, { stdio: ['ignore', 'pipe', 'pipe'] }), 'in.tftpd', log);
  const cpu = new CpuGroup('kea');
  cpu.add(kea.pid!);
  cpu.add(tftpd.pid!);
  try {
    await waitPorts(kea, [67], 'kea-dhcp4', log);
    await waitPorts(tftpd, [69], 'in.tftpd', log);
  } catch (err) {
    await Promise.all([kill(kea), kill(tftpd)]);
    cpu.remove();
    throw err;
  }
  return {
    name: 'kea',
    pids: [kea.pid!, tftpd.pid!],
    cpu,
    settings: {
      kea: { version: firstLine('kea-dhcp4', ['-v']), 'interfaces-config': conf.Dhcp4['interfaces-config'], 'lease-database': 'memfile (temp dir), lfc off', subnet: STORM_SUBNET, 'next-server': SERVER_IP, perBoard: 'reservation hw-address, ip-address, hostname, boot-file-name', multiThreading: 'Kea 2.2 default' },
      tftpd: { version: firstLine('in.tftpd', ['-V']), args: tftpArgs, note: 'tftp-hpa 5.2: blksize, tsize, timeout; no windowsize (RFC 7440): lockstep in both passes; forks a process per transfer' },
    },
    stop: async () => {
      await Promise.all([kill(kea), kill(tftpd)]);
      cpu.remove();
    },
  };
}

function firstLine(cmd: string, args: string[]): string {
  try {
    return String(execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: 5000 })).split('\n')[0]!.trim();
  } catch (e) {
    const out = (e as { stdout?: Buffer; stderr?: Buffer }).stdout?.toString() || (e as { stderr?: Buffer }).stderr?.toString() || '';
    return out.split('\n')[0]!.trim() || 'unknown';
  }
}


// ------------------------------------------------------------------ /proc metering

interface ProcStat {
  ppid: number;
  ticks: number; // utime + stime
  childTicks: number; // cutime + cstime (waited-for children)
}

function procStat(pid: number): ProcStat | null {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    // f[0] is field 3 (state): utime is field 14 → f[11]
    return { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]), childTicks: Number(f[13]) + Number(f[14]) };
  } catch {
    return null;
  }
}

function descendants(roots: number[]): number[] {
  const kids = new Map<number, number[]>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const st = procStat(Number(d));
    if (st) kids.set(st.ppid, [...(kids.get(st.ppid) ?? []), Number(d)]);
  }
  const out: number[] = [];
  const stack = [...roots];
  while (stack.length) {
    for (const c of kids.get(stack.pop()!) ?? []) {
      out.push(c);
      stack.push(c);
    }
  }
  return out;
}

function statusKb(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** CPU ticks of the trees: roots with their reaped children, plus live descendants. */
function treeTicks(roots: number[]): number {
  let t = 0;
  for (const r of roots) {
    const s = procStat(r);
    if (s) t += s.ticks + s.childTicks;
  }
  for (const d of descendants(roots)) t += procStat(d)?.ticks ?? 0;
  return t;
}

/**
 * A server's CPU is read from a cpuacct cgroup of its own (cgroup v1 here): in.tftpd's per-transfer
 * children are reaped without wait() (SIGCHLD ignored), so /proc's cutime never sees them; a cgroup
 * counts every process forked inside it. Without the controller: /proc ticks of the live tree.
 */
export class CpuGroup {
  readonly path?: string;

  constructor(name: string) {
    const p = `/sys/fs/cgroup/cpuacct/dzstorm-${process.pid}-${name}`;
    try {
      mkdirSync(p);
      this.path = p;
    } catch {
      this.path = undefined;
    }
  }

  add(pid: number): void {
    if (this.path) writeFileSync(join(this.path, 'cgroup.procs'), String(pid));
  }

  /** CPU seconds used by everything in the group so far. */
  seconds(): number | undefined {
    return this.path ? Number(readFileSync(join(this.path, 'cpuacct.usage'), 'utf8')) / 1e9 : undefined;
  }

  remove(): void {
    if (!this.path) return;
    try {
      rmdirSync(this.path); // empty once its processes have exited
    } catch {
      /* still busy: the host's cgroup release cleans it */
    }
  }
}

function pssKb(pid: number): number {
  try {
    const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

export class Meter {
  private cpu0 = 0;
  private ticks0 = 0;
  private peakRssKb = 0;
  private peakPssKb = 0;
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly roots: number[],
    private readonly group?: CpuGroup,
  ) {}

  start(): void {
    for (const r of this.roots) {
      try {
        writeFileSync(`/proc/${r}/clear_refs`, '5'); // resets VmHWM to the current RSS
      } catch {
        /* older kernel: the peak then covers the process's life */
      }
    }
    this.peakRssKb = this.peakPssKb = 0;
    this.cpu0 = this.group?.seconds() ?? 0;
    this.ticks0 = treeTicks(this.roots);
    this.sample();
    this.timer = setInterval(() => this.sample(), 250);
  }

  private sample(): void {
    const pids = [...this.roots, ...descendants(this.roots)];
    const rss = pids.reduce((a, p) => a + statusKb(p, 'VmRSS'), 0);
    const pss = pids.reduce((a, p) => a + pssKb(p), 0);
    if (rss > this.peakRssKb) this.peakRssKb = rss;
    if (pss > this.peakPssKb) this.peakPssKb = pss;
  }

  /** CPU seconds of the pass; peak RSS (sum over the process tree, or the roots' VmHWM) and peak PSS (shared pages split among the tree). */
  stop(): { cpuS: number; peakRssMB: number; peakPssMB: number } {
    clearInterval(this.timer);
    this.sample();
    const hwm = this.roots.reduce((a, r) => a + statusKb(r, 'VmHWM'), 0);
    const g = this.group?.seconds();
    const cpuS = g !== undefined ? g - this.cpu0 : (treeTicks(this.roots) - this.ticks0) / CLK_TCK;
    return { cpuS: +cpuS.toFixed(2), peakRssMB: +(Math.max(this.peakRssKb, hwm) / 1024).toFixed(1), peakPssMB: +(this.peakPssKb / 1024).toFixed(1) };
  }
}

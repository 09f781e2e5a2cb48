/**
 * Boot storm (issue #13 point 1): after a power cut, N boards network-boot at once. Each simulated
 * board (bench/storm/client.ts) does what U-Boot does: DHCP through a relay, then TFTP of its boot file
 * and of the kernel, initrd and DTB it names, blksize 1468, U-Boot's retransmissions (5 s, at most 10
 * per file). Half the boards are Banana Pi M2 Ultras (route pxe: pxelinux.cfg/01-<mac>, kernel, initrd,
 * DTB), half QEMU virt (route boot.scr: boot.scr.uimg, kernel, initrd), all enrolled with image `test`.
 * Two passes: window 1 (U-Boot's default) and tftpwindowsize 16 (RFC 7440).
 *
 * Same clients, same run, against: our server (startServer, its own process: shipped TFTP defaults,
 * and with tftp.maxTransfers = N), dnsmasq (DHCP + TFTP) and Kea + tftp-hpa's in.tftpd. Reported per
 * N, pass and server: time until the last board has all its files, p50/p99 per board, failed and
 * timed-out boards, client retransmissions, server CPU seconds and peak RSS (/proc of its processes).
 *
 * Network: a veth pair and a namespace of our own (bench/storm/net.ts) on 10.98.0.0/22, servers in the
 * root namespace on 10.98.0.1, the relay and the boards' addresses in the namespace.
 *
 *   flock /tmp/dozen-test.lock npx tsx bench/storm.ts
 *   BENCH_STORM_N=10,100 BENCH_STORM_SERVERS=ours,dnsmasq BENCH_STORM_PASSES=1,16 npx tsx bench/storm.ts
 *   BENCH_STORM_DEADLINE_S=600   bound on each run (boards not done by then: timed out)
 *   BENCH_STORM_PROBE=0          ours without the 10 console viewers and the API load beside the storm
 *   BENCH_STORM_PROF=<dir>       V8 CPU profiles of our server (main thread and its workers) written there
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { REPO_ROOT } from '../src/config.js';
import { holdRunLock, RUN_LOCK } from '../test/helpers/run-lock.js';
import { buildServedFiles, type ServedFiles } from './storm/files.js';
import { chattySerial, startApiProbe, type ApiProbeResult } from './storm/api-probe.js';
import { makePlan, runClients } from './storm/harness.js';
import { createStormNet, removeStaleStormNets, type StormNet } from './storm/net.js';
import { RELAY_IP, STORM_SUBNET, stormBoards, udpRcvbufErrors, type StormBoard, type StormResult } from './storm/plan.js';
import { children, Meter, SERVER_NAMES, startDnsmasq, startKea, startOurs, type RunningServer, type ServerName } from './storm/servers.js';

const NS = (process.env.BENCH_STORM_N ?? '10,100,300,1000').split(',').map(Number);
const SERVERS = (process.env.BENCH_STORM_SERVERS ?? SERVER_NAMES.join(',')).split(',') as ServerName[];
const WINDOWS = (process.env.BENCH_STORM_PASSES ?? '1,16').split(',').map(Number);
const DEADLINE_MS = Number(process.env.BENCH_STORM_DEADLINE_S ?? 600) * 1000;
/** BENCH_STORM_PROBE=0: ours without the console viewers and the API load (point 1's storm alone). */
const PROBE = process.env.BENCH_STORM_PROBE !== '0';
/** Client processes the simulated boards are spread over (each its own relay address and core share). */
const CLIENTS = Math.max(1, Number(process.env.BENCH_STORM_CLIENTS ?? 2));
/** Our server's shipped tftp.maxTransfers (src/config.ts): `ours-max` is only run where N exceeds it. */
const OURS_DEFAULT_MAX_TRANSFERS = 1024;

export interface Row {
  /** Ours: GET /v1/boards p99 during the storm, with 10 console viewers attached (goal < 100 ms). */
  apiGetBoardsP99Ms?: number;
  api?: ApiProbeResult;
  n: number;
  windowsize: number;
  server: ServerName;
  /** Until the last board had all its files; null when a board failed. */
  lastBoardS: number | null;
  /** Wall time of the run (until every board finished or failed). */
  wallS: number;
  p50S: number | null;
  p99S: number | null;
  failed: number;
  timedOut: number;
  /** Client-side: DHCP retransmissions, TFTP timeouts (each a resent RRQ or ACK), U-Boot "nacks". */
  dhcpRetransmits: number;
  tftpTimeouts: number;
  nacks: number;
  outOfOrder: number;
  cpuS: number;
  peakRssMB: number;
  peakPssMB: number;
  clientCpuS: number;
  clientProcesses: number;
  /** UDP datagrams dropped for a full receive buffer: in the root namespace (the servers' side) and the clients'. */
  serverRcvbufErrors: number;
  clientRcvbufErrors: number;
  errors?: Record<string, number>;
  serverStats?: Record<string, unknown>;
}

function pct(xs: number[], p: number): number | null {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
}
const sec = (ms: number | null): number | null => (ms === null ? null : +(ms / 1000).toFixed(2));

function summarize(n: number, windowsize: number, server: ServerName, r: StormResult, cost: { cpuS: number; peakRssMB: number; peakPssMB: number; serverRcvbufErrors: number }, serverStats?: Record<string, unknown>): Row {
  const ok = r.boards.filter((b) => b.ok).map((b) => b.ms!);
  const failed = r.boards.filter((b) => !b.ok);
  const sum = (k: 'dhcpRetransmits' | 'tftpTimeouts' | 'nacks' | 'outOfOrder'): number => r.boards.reduce((a, b) => a + b[k], 0);
  const errors: Record<string, number> = {};
  for (const b of failed) {
    const key = (b.error ?? 'unknown').replace(/storm-\d+/g, 'storm-#').replace(/01-[0-9a-f-]{17}/g, '01-<mac>').replace(/\(\d+ bytes\)|\(\d+ of \d+ bytes\)/g, '');
    errors[key] = (errors[key] ?? 0) + 1;
  }
  return {
    n,
    windowsize,
    server,
    lastBoardS: failed.length ? null : sec(Math.max(...ok)),
    wallS: sec(r.wallMs)!,
    p50S: sec(pct(ok, 50)),
    p99S: sec(pct(ok, 99)),
    failed: failed.length,
    timedOut: failed.filter((b) => b.timedOut).length,
    dhcpRetransmits: sum('dhcpRetransmits'),
    tftpTimeouts: sum('tftpTimeouts'),
    nacks: sum('nacks'),
    outOfOrder: sum('outOfOrder'),
    cpuS: cost.cpuS,
    peakRssMB: cost.peakRssMB,
    peakPssMB: cost.peakPssMB,
    clientCpuS: r.clientCpuS,
    clientProcesses: r.clientProcesses ?? 1,
    serverRcvbufErrors: cost.serverRcvbufErrors,
    clientRcvbufErrors: r.clientRcvbufErrors ?? 0,
    ...(failed.length ? { errors } : {}),
    ...(serverStats ? { serverStats } : {}),
  };
}

async function startNamed(name: ServerName, dir: string, net: StormNet, boards: StormBoard[], tftpRoot: string, served: ServedFiles, consoleSerial: string): Promise<RunningServer> {
  switch (name) {
    case 'ours':
      return startOurs(dir, boards, undefined, consoleSerial);
    case 'ours-max':
      return startOurs(dir, boards, boards.length, consoleSerial);
    case 'dnsmasq':
      return startDnsmasq(dir, net.hostIf, boards, tftpRoot, served);
    case 'kea':
      return startKea(dir, net.hostIf, boards, tftpRoot, served);
  }
}

/** Reference time ÷ ours: ≥ 1.0 means ours was as fast or faster. Only when both got every board booted. */
function ratios(rows: Row[]): object[] {
  const out: object[] = [];
  for (const n of NS) {
    for (const w of WINDOWS) {
      const at = (s: ServerName): Row | undefined => rows.find((r) => r.n === n && r.windowsize === w && r.server === s);
      const refs = (['dnsmasq', 'kea'] as const).map(at).filter((r): r is Row => Boolean(r));
      const ok = refs.filter((r) => r.lastBoardS !== null);
      const best = ok.length ? Math.min(...ok.map((r) => r.lastBoardS!)) : null;
      for (const s of ['ours', 'ours-max'] as const) {
        const o = at(s);
        if (!o) continue;
        const ratio = (r: Row | undefined): number | null => (r && r.lastBoardS !== null && o.lastBoardS ? +(r.lastBoardS / o.lastBoardS).toFixed(2) : null);
        out.push({
          n,
          windowsize: w,
          ours: s,
          oursS: o.lastBoardS,
          oursFailed: o.failed,
          vsDnsmasq: ratio(at('dnsmasq')),
          vsKea: ratio(at('kea')),
          bestRefS: best,
          goalZeroFailed: o.failed === 0,
          goalNotSlowerThanBestRef: best !== null && o.lastBoardS !== null ? o.lastBoardS <= best : null,
        });
      }
    }
  }
  return out;
}

export async function run(): Promise<object> {
  if (process.getuid?.() !== 0) throw new Error('bench storm needs root (network namespaces, DHCP port 67)');
  execFileSync('bash', [join(REPO_ROOT, 'images/test/build.sh')], { stdio: ['ignore', 'ignore', 'inherit'], timeout: 600_000 });
  await removeStaleStormNets();
  const rows: Row[] = [];
  const settings: Record<string, unknown> = {};
  let net: StormNet | undefined;
  let server: RunningServer | undefined;
  const dirs: string[] = [];
  const serial = await chattySerial();
  const onSignal = (sig: NodeJS.Signals): void => {
    for (const c of children) c.kill('SIGKILL');
    void (net?.cleanup() ?? Promise.resolve()).finally(() => process.exit(sig === 'SIGINT' ? 130 : 143));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    for (const [i, n] of NS.entries()) {
      const boards = stormBoards(n);
      const dir = await mkdtemp(join(tmpdir(), 'dzstorm-'));
      dirs.push(dir);
      await chmod(dir, 0o755); // in.tftpd and dnsmasq read the root as nobody / dnsmasq
      const tftpRoot = join(dir, 'tftproot');
      const served = await buildServedFiles(tftpRoot, boards);
      net = await createStormNet(boards);
      try {
        // Rotate who goes first at each N.
        const order = SERVERS.filter((s) => !(s === 'ours-max' && n <= OURS_DEFAULT_MAX_TRANSFERS));
        const rotated = [...order.slice(i % order.length), ...order.slice(0, i % order.length)];
        for (const name of rotated) {
          server = await startNamed(name, dir, net, boards, tftpRoot, served, serial.url);
          settings[name] = server.settings;
          try {
            for (const w of WINDOWS) {
              const meter = new Meter(server.pids, server.cpu);
              const before = await server.stats?.();
              const drops0 = udpRcvbufErrors(readFileSync('/proc/net/snmp', 'utf8'));
              // Ours: console viewers on busy lines and the API polled, all through the storm.
              const probe = PROBE && server.api && (await startApiProbe(server.api.url, server.api.token, server.api.consoleBoards));
              meter.start();
              const r = await runClients(net.ns, dir, makePlan(boards, served, w, DEADLINE_MS), CLIENTS);
              const cost = { ...meter.stop(), serverRcvbufErrors: udpRcvbufErrors(readFileSync('/proc/net/snmp', 'utf8')) - drops0 };
              const api = probe ? await probe.stop() : undefined;
              const after = await server.stats?.();
              const row = { ...summarize(n, w, name, r, cost, after && before ? { before, after } : undefined), ...(api ? { apiGetBoardsP99Ms: api.getBoards.p99Ms, api } : {}) };
              rows.push(row);
              const { serverStats: _s, errors, ...brief } = row;
              console.error(`storm: ${JSON.stringify(brief)}${errors ? ` errors ${JSON.stringify(errors)}` : ''}`);
              await new Promise((res) => setTimeout(res, 1000));
            }
          } finally {
            await server.stop();
            server = undefined;
          }
        }
      } finally {
        await net.cleanup();
        net = undefined;
      }
    }
  } finally {
    await server?.stop().catch(() => {});
    await net?.cleanup();
    for (const d of dirs) await rm(d, { recursive: true, force: true });
    await serial.close();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  return {
    what: `boot storm: N simulated U-Boot boards at once (half bananapi-m2u via pxelinux + DTB, half qemu-virt-armv7 via boot.scr.uimg), DHCP via relay ${RELAY_IP} then TFTP blksize 1468 at window 1 and ${WINDOWS.filter((w) => w > 1).join(', ')}; subnet ${STORM_SUBNET}; servers in their own processes, CPU and peak RSS from /proc`,
    client: 'U-Boot net/bootp.c + net/tftp.c behaviour: DHCP 250 ms doubling to 2 s, 28 s total, 5 s for the ACK; TFTP timeout 5 s, > 10 timeouts per file fail it; a failed file fails the board',
    rows,
    ratios: ratios(rows),
    settings,
  };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  // As bench/run.ts does: a test run starting meanwhile would take our dz?-<hex> namespace for a leftover.
  if (!(await holdRunLock())) console.warn(`another test or benchmark run holds ${RUN_LOCK}: run benchmarks alone`);
  const r = (await run()) as { rows: Row[]; ratios: object[] };
  const out = join(tmpdir(), `dozen-storm-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(out, JSON.stringify(r, null, 2) + '\n');
  console.error(`storm: full result (server counters, settings) in ${out}`);
  console.table(r.rows.map(({ serverStats: _s, errors: _e, ...row }) => row));
  console.table(r.ratios);
  process.exit(0);
}

/**
 * Issue #13 point 4: how the server's costs grow with a full rack. For N boards (BENCH_STATE_N, default
 * 10,100,1000), each holding a live lease and carrying the history of BENCH_STATE_BOOTS (10) past boot
 * cycles, the real server (startServer) is started on that state and measured: a state write, lease
 * allocation (one at a time, and a batch at once beside the fsync-only reference of bench/leases.ts),
 * GET /v1/boards and /v1/leases, start-up, the state file's size, the DHCP reservation lookup and the
 * cost of a boot's events. A metric "hits" when it grows at most 2× from the smallest N to the largest.
 *
 * The state is not made through the API (1000 boards × 11 leases, each ~15 whole-file writes, would take
 * hours at 30 MB a write): one real boot cycle through the API, LeaseService and BootService gives the
 * records a cycle leaves (bench/state-growth/state.ts calibrate), and those are re-numbered and re-timed
 * into a schema-checked state document. Board events (in memory only) are replayed through the real
 * BootService in the server's process. Each N runs in its own process (bench/state-growth/worker.ts).
 * Besides the N rack boards there are BATCH + SEQUENTIAL free boards for the allocation requests (each
 * round of bursts takes them again, its leases released before the next).
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeImageRoot } from '../test/helpers/fixtures.js';
import { calibrate, FIXED_PAGE, MARK, rackState, stateBreakdown, writeState, type WorkerSpec } from './state-growth/state.js';

const NS = (process.env.BENCH_STATE_N ?? '10,100,1000').split(',').map((x) => Number(x.trim())).filter((x) => x > 0);
const BOOTS = Number(process.env.BENCH_STATE_BOOTS ?? 10);
const BATCH = Number(process.env.BENCH_STATE_BATCH ?? 20);
const SEQUENTIAL = Number(process.env.BENCH_STATE_SEQ ?? 5);
const SAMPLES = Number(process.env.BENCH_STATE_SAMPLES ?? 50);
/** Allocation bursts, each paired with one of the fsync-only reference: the ratio is the median pair. */
const ROUNDS = Number(process.env.BENCH_STATE_ROUNDS ?? 5);
const SPARE = BATCH + SEQUENTIAL;
const WORKER_TIMEOUT_MS = 8 * 60_000;
const WORKER = fileURLToPath(new URL('./state-growth/worker.ts', import.meta.url));

type Result = Record<string, any>;

/** Every board's serial line: a TCP port that accepts and stays quiet (a rack's console server, ser2net). */
async function serialSink() {
  const sockets = new Set<Socket>();
  const srv = createServer((s) => {
    sockets.add(s);
    s.on('error', () => {});
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  return {
    line: `tcp://127.0.0.1:${port}`,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise<void>((r) => srv.close(() => r()));
    },
  };
}

function runWorker(spec: WorkerSpec, specFile: string): Promise<Result> {
  writeFileSync(specFile, JSON.stringify(spec));
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', WORKER, specFile], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, LOG_LEVEL: 'warn' } });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), WORKER_TIMEOUT_MS);
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      const line = out.split('\n').find((l) => l.startsWith(MARK));
      if (code === 0 && line) resolve(JSON.parse(line.slice(MARK.length)));
      else reject(new Error(`worker for ${spec.boards} boards: ${signal ?? `exit ${code}`}${signal === 'SIGKILL' ? ` (over ${WORKER_TIMEOUT_MS / 60_000} min)` : ''}\n${out.slice(-2000)}`));
    });
  });
}

interface Metric {
  name: string;
  unit: string;
  get: (r: Result) => number;
  /** Higher is better (throughput): its cost is the inverse. */
  higherBetter?: boolean;
  /** Judged by its own rule instead of growth. */
  verdict?: (vals: number[]) => boolean;
  /** Shown, not judged (the reference). */
  info?: boolean;
  cause?: string;
}

/** Where each cost comes from in src (file and function: line numbers move), shown for the misses. */
const METRICS: Metric[] = [
  { name: 'state file size, history inside (as written)', unit: 'MB', get: (r) => r.stateBytes / 1e6, info: true },
  { name: 'first start-up on it, then moving history out', unit: 'ms', get: (r) => r.firstStartupMs + (r.archived?.ms ?? 0), info: true },
  // The rack's own data (every board, live lease and its current job): it grows with the rack by what it
  // holds, and no request reads or writes it whole (writes are journal lines above 256 KiB). Shown.
  { name: 'state file size, as kept (history in the log)', unit: 'MB', get: (r) => (r.stateBytesKept ?? r.stateBytes) / 1e6, info: true },
  // Once per start, O(boards) by nature: judged as part of the start-up below.
  { name: 'Store.open on it (read, journal, schema check)', unit: 'ms', get: (r) => r.storeOpenMs, info: true },
  { name: 'server start-up (startServer)', unit: 'ms', get: (r) => r.startupMs, cause: 'Store.open of the whole document (src/server.ts startServer), one console session and lease log per board (consoles.sync, resumeBoardLeaseLogs)' },
  { name: 'state write: Store.update p50', unit: 'ms', get: (r) => r.storeUpdateMs.p50, cause: 'under 256 KiB each batch rewrites the whole file (src/store/store.ts persist, DurableJsonAdapter.write); above it, a journal line of what changed (src/store/journal.ts encode), and the whole file again whenever the journal reaches its size' },
  { name: 'state write: Store.update p99', unit: 'ms', get: (r) => r.storeUpdateMs.p99, cause: 'as above' },
  { name: 'POST /v1/leases one at a time p50', unit: 'ms', get: (r) => r.leaseSequentialMs.p50, cause: 'the allocating update is a whole-file write (src/leases/service.ts create), after a quota scan of every lease ever kept and a filter + sort of all boards (pickBoard)' },
  { name: 'Store.update calls per lease (until it waits for DHCP)', unit: 'n', get: (r) => r.updatesPerLease, info: true },
  { name: 'POST /v1/leases batch p50', unit: 'ms', get: (r) => r.allocation.ours.p50, cause: 'each allocation (src/leases/service.ts create) and its job\'s first steps (src/leases/jobs.ts) share the event loop and the store queue with the other requests' },
  { name: 'POST /v1/leases batch p99', unit: 'ms', get: (r) => r.allocation.ours.p99, cause: 'as above' },
  { name: 'POST /v1/leases batch throughput', unit: '/s', get: (r) => r.allocation.ours.perSecond, higherBetter: true, cause: 'as above' },
  { name: 'reference (fsync-only: one fsync per request, no group commit) batch throughput', unit: '/s', get: (r) => r.allocation.oneByOneReference.perSecond, higherBetter: true, info: true },
  { name: 'floor (group-committed, a whole tiny file) batch throughput', unit: '/s', get: (r) => r.allocation.reference.perSecond, higherBetter: true, info: true },
  { name: 'floor (group-committed, one journal line) batch throughput', unit: '/s', get: (r) => r.allocation.journalReference.perSecond, higherBetter: true, info: true },
  { name: 'allocation ratio to the fsync-only reference (goal ≥ 1.0)', unit: '×', get: (r) => r.allocation.oneByOneThroughputRatio, higherBetter: true, verdict: (v) => v.every((x) => x >= 1), cause: 'see the batch rows' },
  // The floors do the store's own group-committed write and nothing else: an allocation also
  // authenticates, validates, picks a board and starts a job, so it stays below them by construction.
  { name: 'allocation ratio to the whole-file floor', unit: '×', get: (r) => r.allocation.throughputRatio, higherBetter: true, info: true },
  { name: 'allocation ratio to the journal-line floor', unit: '×', get: (r) => r.allocation.journalThroughputRatio, higherBetter: true, info: true },
  // A full page holds min(boards, 500): it grows with the rack by what it returns. The per-request cost at
  // the same page size is the one judged (a request's own cost must not grow with the rack).
  { name: `GET /v1/boards?limit=${FIXED_PAGE} p50`, unit: 'ms', get: (r) => r.getBoardsPage.ms.p50, cause: 'the page is cut from the whole list (src/api/paging.ts page, src/api/routes/boards.ts GET /boards)' },
  { name: `GET /v1/leases?limit=${FIXED_PAGE} p50 (admin)`, unit: 'ms', get: (r) => r.getLeasesPage.ms.p50, cause: 'the page is cut from every live lease, each redacted (src/leases/service.ts list, publicLease)' },
  { name: 'GET /v1/boards p50 (a full page: up to 500)', unit: 'ms', get: (r) => r.getBoards.ms.p50, info: true },
  { name: 'GET /v1/boards p99 (a full page)', unit: 'ms', get: (r) => r.getBoards.ms.p99, info: true },
  { name: 'GET /v1/boards response (a full page)', unit: 'KB', get: (r) => r.getBoards.bytes / 1e3, info: true },
  { name: 'GET /v1/leases p50 (admin, a full page)', unit: 'ms', get: (r) => r.getLeases.ms.p50, info: true },
  { name: 'GET /v1/leases response (a full page)', unit: 'KB', get: (r) => r.getLeases.bytes / 1e3, info: true },
  { name: 'GET /v1/boards/:id/events p50', unit: 'ms', get: (r) => r.getBoardEvents.ms.p50, cause: 'Inventory.get is a linear scan (src/inventory/boards.ts get)' },
  { name: 'DHCP reservation: Inventory.byMac (last board)', unit: 'µs', get: (r) => r.byMacUs.p50, cause: 'src/inventory/boards.ts byMac' },
  { name: 'DHCP reservation: BootService.lookup (last board)', unit: 'µs', get: (r) => r.dhcpLookupUs.p50, cause: 'leaseOnBoard scans every lease ever kept, per DHCP request (src/leases/service.ts leaseOnBoard, via src/boot/service.ts imageFor)' },
  { name: 'boot event (DHCP/TFTP → BoardEvents)', unit: 'µs', get: (r) => r.bootEventUs, cause: 'per kernel fetch a copy of every board (src/boot/service.ts closeOnKernel: inventory.list()) and leaseOnBoard scans of every lease' },
];

function table(ns: number[], perN: Record<number, Result>) {
  return METRICS.map((m) => {
    const vals = ns.map((n) => m.get(perN[n]!));
    const first = vals[0]!;
    const lastV = vals[vals.length - 1]!;
    const growth = m.higherBetter ? first / lastV : lastV / first; // how much the cost grew
    const hit = m.verdict ? m.verdict(vals) : growth <= 2;
    return {
      metric: `${m.name} [${m.unit}]`,
      ...Object.fromEntries(ns.map((n, i) => [`N=${n}`, +vals[i]!.toPrecision(4)])),
      [`growth ${ns[0]}→${ns[ns.length - 1]}`]: +growth.toFixed(2),
      verdict: m.info ? (m.name.startsWith('reference') ? '(reference)' : '(info)') : hit ? 'hit' : 'missed',
      ...(!m.info && !hit && m.cause ? { cause: m.cause } : {}),
    };
  });
}

export function markdown(rows: Array<Record<string, unknown>>): string {
  const cols = Object.keys(rows[0]!).filter((c) => c !== 'cause');
  const lines = [`| ${cols.join(' | ')} |`, `|${cols.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${cols.map((c) => String(r[c])).join(' | ')} |`)];
  return lines.join('\n');
}

export async function run(): Promise<object> {
  const work = mkdtempSync(join(tmpdir(), 'state-growth-'));
  // Every temp dir made below (the API harness's, the workers') lands in `work`, removed at the end.
  const prevTmp = process.env.TMPDIR;
  process.env.TMPDIR = work;
  const imagesRoot = makeImageRoot();
  const sink = await serialSink();
  try {
    const t = await calibrate(imagesRoot);
    const perN: Record<number, Result> = {};
    for (const n of NS) {
      const dataDir = join(work, `n${n}`);
      mkdirSync(dataDir, { recursive: true });
      const t0 = Date.now();
      const state = rackState({ boards: n, spare: SPARE, bootsPerBoard: BOOTS, serial: sink.line, boardsPerTenant: 10 }, t);
      writeState(join(dataDir, 'state.json'), state);
      const counts = { boards: state.boards.length, leases: state.leases.length, jobs: state.jobs.length, jobSteps: state.jobs.reduce((a, j) => a + j.steps.length, 0), transitions: state.transitions.length, tenants: state.tenants.length };
      const breakdownBytes = stateBreakdown(join(dataDir, 'state.json'));
      const buildMs = Date.now() - t0;
      const spec: WorkerSpec = { dataDir, imagesDir: imagesRoot, boards: n, spare: SPARE, bootsPerBoard: BOOTS, samples: SAMPLES, sequential: SEQUENTIAL, batch: BATCH, rounds: ROUNDS };
      const w0 = Date.now();
      const r = await runWorker(spec, join(work, `spec-${n}.json`));
      perN[n] = { ...r, counts, breakdownBytes, buildMs, workerMs: Date.now() - w0 };
      console.error(`state-growth: N=${n} done in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
      rmSync(dataDir, { recursive: true, force: true });
    }
    const rows = table(NS, perN);
    const git = (...args: string[]) => spawnSync('git', args, { cwd: fileURLToPath(new URL('..', import.meta.url)), encoding: 'utf8' }).stdout.trim();
    return {
      code: { head: git('rev-parse', '--short', 'HEAD'), uncommittedSrc: git('status', '--porcelain', '--', 'src').split('\n').filter(Boolean) },
      boards: NS,
      bootsPerBoard: BOOTS,
      spareBoards: SPARE,
      rounds: ROUNDS,
      batch: BATCH,
      sequential: SEQUENTIAL,
      samples: SAMPLES,
      calibration: {
        stateBytesPerBoot: t.stateBytesPerBoot,
        boardEventsPerBoot: t.eventsPerBoot,
        jobStepsPerBoot: t.jobStepsPerBoot,
        recordsPerBoot: { leases: 1, jobs: t.released.jobs.length, transitions: t.released.transitions.length },
      },
      table: rows,
      hits: rows.filter((r) => r.verdict === 'hit').length,
      missed: rows.filter((r) => r.verdict === 'missed').map((r) => r.metric),
      perN,
    };
  } finally {
    await sink.close();
    if (prevTmp === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = prevTmp;
    rmSync(work, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  run().then(
    (r) => {
      console.log(JSON.stringify(r, null, 2));
      console.log(`\n${markdown((r as { table: Array<Record<string, unknown>> }).table)}`);
      process.exit(0);
    },
    (err) => {
      console.error(err);
      process.exit(1);
    },
  );
}

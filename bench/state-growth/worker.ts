/**
 * One rack size of bench/state-growth.ts, in a process of its own (a fresh heap, and its jobs — which
 * wait for a DHCP that never comes — end with it): the real server started on the state file the parent
 * wrote, then each per-request cost measured. Prints `RESULT <json>` on stdout and exits.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../src/config.js';
import type { DhcpRequestInfo } from '../../src/boot/dhcp/server.js';
import { startServer } from '../../src/server.js';
import { fsyncReference } from '../fsync-reference.js';
import { Store } from '../../src/store/store.js';
import { unusedUdpPortPair } from '../../test/boot/udp-port.js';
import { boardAt, bootService, FIXED_PAGE, IMAGE, MARK, replayBoot, type WorkerSpec } from './state.js';

const BURST = fileURLToPath(new URL('./burst.mjs', import.meta.url));
/** Server starts measured (median). */
const STARTS = 3;
const sorted = (xs: number[]) => [...xs].sort((a, b) => a - b);
const pct = (xs: number[], p: number) => sorted(xs)[Math.min(xs.length - 1, Math.floor((xs.length * p) / 100))]!;
const r2 = (x: number) => +x.toFixed(x < 1 ? 4 : 2);
const stats = (xs: number[]) => ({ p50: r2(pct(xs, 50)), p99: r2(pct(xs, 99)), n: xs.length });
const nowMs = () => Number(process.hrtime.bigint()) / 1e6;
async function timed<T>(fn: () => Promise<T>): Promise<{ v: T; ms: number }> {
  const t = nowMs();
  const v = await fn();
  return { v, ms: nowMs() - t };
}

/**
 * N concurrent POSTs from a client process of its own (burst.mjs): tenants' requests come from other
 * machines, so the client's work must not share the server's event loop (in one process, whatever the
 * server does after answering — a job's first steps — would be timed as if the client waited for it).
 */
function burst(req: { url: string; token?: string; body?: unknown; n: number }): Promise<{ wall: number; ms: number[]; statuses: number[] }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BURST], { stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`burst client exited ${code}`))));
    child.stdin.end(JSON.stringify(req));
  });
}

async function main(spec: WorkerSpec) {
  const stateFile = join(spec.dataDir, 'state.json');
  const out: Record<string, unknown> = { stateBytes: statSync(stateFile).size };

  // Server start-up on that state.
  const config = loadConfig(undefined, {
    dataDir: spec.dataDir, imagesDir: spec.imagesDir, api: '127.0.0.1:0', bootIp: '127.0.0.1', subnet: '127.0.0.0/8',
    dhcp: { port: await unusedUdpPortPair() }, tftp: { port: 0 }, metadata: { port: 0 }, gateway: { enabled: false }, lab: { enabled: false }, network: { driver: 'none' },
    // jobs of the allocation measurements wait for DHCP: never time out (and retry, and write) while we measure
    leases: { bootTimeoutMs: 3_600_000, osTimeoutMs: 3_600_000 },
    limits: { leasesPerTenant: 100_000 },
  });
  // First start on the state as written (history inside it, as a server before the history log kept it);
  // the server then moves finished jobs and long-released leases to the history log (what its reaper
  // does), and the rest is measured on a second start, on the state as it is kept from then on.
  const first = await timed(() => startServer(config));
  out.firstStartupMs = r2(first.ms);
  const archived = await timed(() => first.v.leases.archive(config.leases.archiveAfterMs));
  out.archived = { records: archived.v, ms: r2(archived.ms) };
  await first.v.stop();
  out.stateBytesKept = statSync(stateFile).size;
  // Store.open alone (read, journal replay, schema check), on a copy of the state as it is kept from now
  // on: the part of every start-up that reads the document (median of 3).
  const opens: number[] = [];
  for (let i = 0; i < 3; i++) {
    const copyDir = mkdtempSync(join(tmpdir(), 'sg-open-'));
    cpSync(stateFile, join(copyDir, 'state.json'));
    if (existsSync(`${stateFile}.journal`)) cpSync(`${stateFile}.journal`, join(copyDir, 'state.json.journal'));
    const opened = await timed(() => Store.open(join(copyDir, 'state.json')));
    await opened.v.close();
    rmSync(copyDir, { recursive: true, force: true });
    opens.push(opened.ms);
  }
  out.storeOpenMs = r2(pct(opens, 50));
  // Start-up of one process is noisy on a shared 2-core machine (±30% between single starts): the median
  // of STARTS, each a full start and stop; the last one stays up for the rest.
  const starts: number[] = [];
  let started: Awaited<ReturnType<typeof timed<Awaited<ReturnType<typeof startServer>>>>> | undefined;
  for (let i = 0; i < STARTS; i++) {
    if (started) await started.v.stop();
    started = await timed(() => startServer(config));
    starts.push(r2(started.ms));
  }
  const server = started!.v;
  out.startupMs = r2(pct(starts, 50));
  out.startupRunsMs = starts;
  // Count the state writes (whole-file rewrites) the requests below cause.
  let writesSeen = 0;
  const update = server.store.update.bind(server.store);
  server.store.update = ((fn) => (writesSeen++, update(fn))) as typeof server.store.update;
  // Durable writes, where the store counts them (a store with group commit carries several updates per write).
  const durable = () => (server.store as unknown as { stats?: { writes: number } }).stats?.writes ?? NaN;
  out.heapAfterStartMb = Math.round(process.memoryUsage().heapUsed / 2 ** 20);

  // The event history of B boots of every rack board, through the real BootService (its byMac/byIp and BoardEvents.add).
  const boot = bootService(server);
  let n = 0;
  const ingest = nowMs();
  for (let k = 0; k < spec.bootsPerBoard; k++) {
    for (let i = 0; i < spec.boards; i++) {
      const b = boardAt(i);
      server.events.add(b.id, { type: 'power', message: `power cycle (job j-bench${k})` });
      n += 1 + replayBoot(boot, b);
    }
    await new Promise((r) => setImmediate(r));
  }
  out.bootEventUs = r2(((nowMs() - ingest) * 1000) / n);
  out.bootEvents = n;
  await new Promise((r) => setTimeout(r, 500)); // the kernel fetches' boot-window bookkeeping (async) settles

  // DHCP reservation of the last board: Inventory.byMac alone, and BootService.lookup (what the DHCP server awaits per request).
  const last = boardAt(spec.boards + spec.spare - 1);
  const REPS = 2000;
  const byMac: number[] = [];
  for (let rep = -5; rep < 20; rep++) {
    const t = nowMs();
    for (let j = 0; j < REPS; j++) if (!server.inventory.byMac(last.mac)) throw new Error('byMac: last board not found');
    if (rep >= 0) byMac.push(((nowMs() - t) * 1000) / REPS); // the first rounds warm the JIT up
  }
  out.byMacUs = stats(byMac);
  const info: DhcpRequestInfo = { mac: last.mac, msgType: 1, xid: 7, giaddr: '0.0.0.0', ciaddr: '0.0.0.0', vendorClass: 'U-Boot.armv7', clientArch: 22, paramRequestList: [1, 3, 6, 66, 67] };
  const lookup: number[] = [];
  for (let rep = -5; rep < 20; rep++) {
    const t = nowMs();
    for (let j = 0; j < 200; j++) if (!(await boot.lookup(info))) throw new Error('DHCP lookup: last board not served');
    if (rep >= 0) lookup.push(((nowMs() - t) * 1000) / 200);
  }
  out.dhcpLookupUs = stats(lookup);

  // One state write: a small mutation.
  const writes: number[] = [];
  for (let i = 0; i < spec.samples; i++) {
    writes.push((await timed(() => server.store.update((s) => void (s.tenants[0]!.name = `tenant 0 (${i})`)))).ms);
  }
  out.storeUpdateMs = stats(writes);

  const api = async (method: string, path: string, body?: unknown, token = server.adminToken) => {
    const res = await fetch(`${server.apiUrl}/v1${path}`, { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
    const buf = Buffer.from(await res.arrayBuffer());
    return { status: res.status, bytes: buf.length, body: buf.length ? JSON.parse(buf.toString('utf8')) : undefined };
  };
  const getSeries = async (path: string, count: number) => {
    const ms: number[] = [];
    let bytes = 0;
    for (let i = 0; i < count; i++) {
      const r = await timed(() => api('GET', path));
      if (r.v.status !== 200) throw new Error(`GET ${path}: ${r.v.status}`);
      ms.push(r.ms);
      bytes = r.v.bytes;
    }
    return { ms: stats(ms), bytes };
  };
  out.getBoards = await getSeries('/boards', spec.samples);
  out.getBoardsPage = await getSeries(`/boards?limit=${FIXED_PAGE}`, spec.samples);
  out.getLeasesPage = await getSeries(`/leases?limit=${FIXED_PAGE}`, Math.min(spec.samples, 20));
  out.getLeases = await getSeries('/leases', Math.min(spec.samples, 20));
  out.getBoardEvents = await getSeries(`/boards/${boardAt(spec.boards - 1).id}/events`, spec.samples);

  const token = (await api('POST', '/tenants', { id: 'bench', name: 'bench' })).body.token as string;

  // The references first (our jobs would write beside them): one durable state write per request, nothing
  // else — group-committed as a whole tiny file and as one journal line (the store's own floors), and one
  // fsync per request, one after another (issue #13's fsync-only reference: no group commit).
  const refRun = async (journal: boolean, oneByOne = false) => {
    const reference = await fsyncReference({ journal, oneByOne });
    const b = await burst({ url: reference.url, n: spec.batch });
    await reference.close();
    return b;
  };
  const { ms: ref, wall: refWall } = await refRun(false);
  const { ms: refJ, wall: refJWall } = await refRun(true);

  // Ours, one at a time: each request once the last one's job has done its writes and waits for DHCP.
  const seq: number[] = [];
  const w0 = writesSeen;
  const d0 = durable();
  for (let i = 0; i < spec.sequential; i++) {
    const r = await timed(() => api('POST', '/leases', { image: IMAGE }, token));
    if (r.v.status !== 202) throw new Error(`POST /leases: ${r.v.status} ${JSON.stringify(r.v.body)}`);
    seq.push(r.ms);
    const jobId = r.v.body.job.id as string;
    for (;;) {
      const j = server.leases.jobs.get(jobId);
      if (j?.steps.find((s) => s.name === 'dhcp')?.state === 'running') break;
      if (j && j.state !== 'running') throw new Error(`job ${jobId} ended: ${j.error}`);
      await new Promise((res) => setTimeout(res, 10));
    }
  }
  out.leaseSequentialMs = stats(seq);
  // until its job waits for the board's DHCP
  out.updatesPerLease = (writesSeen - w0) / spec.sequential;
  out.durableWritesPerLease = (durable() - d0) / spec.sequential;

  // Ours, a batch at once, against issue #13's fsync-only reference, in `rounds` pairs (a burst of 20
  // takes 30-70 ms, so one pair says as much about the machine's noise as about either side). The
  // order alternates, so neither side always runs right after the other's leftover work.
  const w1 = writesSeen;
  const d1 = durable();
  const pairs: Array<{ ours: Awaited<ReturnType<typeof burst>>; ref: Awaited<ReturnType<typeof burst>> }> = [];
  // Every round takes the same BATCH spare boards: the last round's leases are released (their jobs end
  // at once here: power is `true`, no disks) and their boards free again before the next one.
  const spares = new Set(Array.from({ length: spec.spare }, (_, i) => boardAt(spec.boards + i).id));
  const freeSpares = async () => {
    for (const l of server.store.state.leases.filter((x) => x.tenantId === 'bench' && x.state !== 'released')) {
      const r = await api('DELETE', `/leases/${l.id}`, undefined, token);
      if (r.status !== 202) throw new Error(`DELETE /leases/${l.id}: ${r.status} ${JSON.stringify(r.body)}`);
    }
    for (const deadline = Date.now() + 60_000; ; await new Promise((res) => setTimeout(res, 20))) {
      const busy = server.inventory.list().filter((b) => spares.has(b.id) && b.state !== 'available');
      if (!busy.length) return;
      if (Date.now() > deadline) throw new Error(`spare boards not free 60 s after release: ${busy.map((b) => `${b.id} ${b.state}`).join(', ')}`);
    }
  };
  for (let round = 0; round < spec.rounds; round++) {
    await freeSpares();
    const oursBurst = () => burst({ url: `${server.apiUrl}/v1/leases`, token, body: { image: IMAGE }, n: spec.batch });
    if (round % 2) {
      const ours = await oursBurst();
      pairs.push({ ours, ref: await refRun(false, true) });
    } else {
      const ref1 = await refRun(false, true);
      pairs.push({ ref: ref1, ours: await oursBurst() });
    }
  }
  const ratios = pairs.map((p) => +(p.ref.wall / p.ours.wall).toFixed(3));
  // The pair whose ratio is the median stands for the run (its walls and latencies).
  const mid = pairs[ratios.indexOf(pct(ratios, 50))]!;
  const { ms: oursMs, wall: oursWall } = mid.ours;
  const { ms: ref1, wall: ref1Wall } = mid.ref;
  out.allocation = {
    requests: spec.batch * spec.rounds,
    rounds: spec.rounds,
    granted: pairs.reduce((a, p) => a + p.ours.statuses.filter((x) => x === 202).length, 0),
    ours: { perSecond: Math.round((spec.batch / oursWall) * 1000), ...stats(oursMs) },
    reference: { perSecond: Math.round((spec.batch / refWall) * 1000), ...stats(ref) },
    throughputRatio: +(refWall / oursWall).toFixed(3),
    journalReference: { perSecond: Math.round((spec.batch / refJWall) * 1000), ...stats(refJ) },
    journalThroughputRatio: +(refJWall / oursWall).toFixed(3),
    oneByOneReference: { perSecond: Math.round((spec.batch / ref1Wall) * 1000), ...stats(ref1) },
    oneByOneThroughputRatio: pct(ratios, 50),
    oneByOneRatios: ratios,
    updatesDuringBatch: writesSeen - w1,
    durableWritesDuringBatch: durable() - d1,
  };
  out.stateBytesAfter = statSync(stateFile).size;
  return out;
}

const spec = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as WorkerSpec;
main(spec).then(
  (r) => {
    process.stdout.write(`${MARK}${JSON.stringify(r)}\n`, () => process.exit(0)); // its jobs wait for DHCP: they end with the process
  },
  (err) => {
    console.error(err);
    process.exit(1);
  },
);

/**
 * DHCP rate, ours vs Kea 2.2, in the same run (issue #13 point 3).
 *
 * Topology: two namespaces of our own joined by one veth pair — the server's (ours or kea-dhcp4,
 * one at a time, 10.99.0.1) and the client's (perfdhcp as a relay agent on 10.99.0.2: `-l`, so it
 * sets giaddr and both servers answer it unicast on port 67; no broadcast). Nothing else is on them.
 *
 * Part 1, rate: at each rate perfdhcp runs full DORA (`-r`, 4-way) for STEP_S seconds against a
 * fresh server: ours (startServer in a child process, lab off, CLIENTS boards enrolled), then Kea
 * (memfile leases in a temp dir, the same CLIENTS MACs as host reservations with the same
 * addresses, single-threaded: Kea 2.2's default). perfdhcp's clients are `-b mac=02:99:00:00:00:00
 * -R CLIENTS`: it adds a random r in [0, CLIENTS) to the template's low octets (no carry), i.e.
 * 02:99:00:00:hi(r):lo(r) — exactly the MACs enrolled; the server's `ignored` counter (0 expected)
 * checks it. A rate is held cleanly when drops (DISCOVER-OFFER and REQUEST-ACK together) are < 1%
 * and perfdhcp really sent ≥ 95% of the asked rate (else the client, not the server, was the limit).
 * Goal (issue): at Kea's highest clean rate, ours is clean too. Each cell is the best of REPEATS runs
 * (order alternating), each on a fresh server after a 1 s warm-up; `othersCpuPct` shows how much of
 * the host other work took meanwhile (2 cores: up to 200).
 *
 * Part 2, lookup cost vs enrolled boards: ours alone at one rate it held cleanly in part 1, with 10,
 * 100, 1,000 and 10,000 boards enrolled; perfdhcp asks for the same SCALE_ASKED boards each time,
 * enrolled last (the worst place for a scan in enrollment order). Reported: achieved rate, drops,
 * server CPU (utime+stime of the server process, /proc/<pid>/stat) per completed exchange.
 *
 *   flock /tmp/dozen-test.lock timeout 900 npx tsx bench/dhcp-rate.ts
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { REPO_ROOT } from '../src/config.js';
import { addVethPair, createNetns, deleteNetns, execInNetns, ip, linkUp, moveToNetns, runInNetns, setAddr } from '../src/lab/netns.js';
import { childrenCpuSeconds, cpuSeconds, hostBusySeconds, parsePerfdhcp, type PerfReport } from './dhcp-rate/perfdhcp.js';
import type { ChildMessage, ServerSpec } from './dhcp-rate/server.js';
import { holdRunLock, RUN_LOCK } from '../test/helpers/run-lock.js';

const RATES = (process.env.DHCP_RATES ?? '1000,2000,4000,8000,12000,16000').split(',').map(Number);
const STEP_S = Number(process.env.DHCP_STEP_S ?? 5);
const CLIENTS = 200;
const SCALE_BOARDS = [10, 100, 1000, 10_000];
const SCALE_ASKED = 10;
const MAC_BASE = '02:99:00:00:00:00';
const SERVER_IP = '10.99.0.1';
const RELAY_IP = '10.99.0.2';
/** Part 1 (ours and Kea): 10.99.0.0/24, reservations .10 upwards. */
const RATE_CONFIG = { subnet: '10.99.0.0/24' };
/** Part 2 needs room for 10,000 reservations: the same 10.99 block, widened to /18. */
const SCALE_SUBNET = '10.99.0.0/18';
const LINK_PREFIX = 18;
const CLEAN_DROPS_PCT = 1;
const WARMUP_RATE = 500;
const WARMUP_S = Number(process.env.DHCP_WARMUP_S ?? 1);
const REPEATS = Number(process.env.DHCP_REPEATS ?? 2);
/** `rate`, `scaling` or both (default); DHCP_SCALE_RATE fixes part 2's rate (default: ours' highest clean rate in part 1). */
const PARTS = (process.env.DHCP_PARTS ?? 'rate,scaling').split(',');

type Best<T extends Step> = T & { runs: Array<Pick<Step, 'acksPerS' | 'dropsPct' | 'cpuUsPerExchange' | 'othersCpuPct'>> };
/** The run with the fewest drops (then the most ACKs/s), with every run's headline numbers. */
function best<T extends Step>(runs: T[]): Best<T> {
  const b = [...runs].sort((x, y) => x.dropsPct - y.dropsPct || y.acksPerS - x.acksPerS)[0]!;
  return { ...b, runs: runs.map((r) => ({ acksPerS: r.acksPerS, dropsPct: r.dropsPct, cpuUsPerExchange: r.cpuUsPerExchange, othersCpuPct: r.othersCpuPct })) };
}

const macOf = (prefix: number, i: number): string =>
  [0x02, prefix, (i >>> 24) & 255, (i >>> 16) & 255, (i >>> 8) & 255, i & 255].map((b) => b.toString(16).padStart(2, '0')).join(':');
/** The MAC perfdhcp makes from MAC_BASE for random value r (< 65536). */
const askedMac = (r: number): string => macOf(0x99, r);
const ipOf = (n: number): string => `10.99.${n >> 8}.${n & 255}`; // n: offset in 10.99.0.0/18

// ------------------------------------------------------------------ topology

interface Topology {
  srvNs: string;
  cliNs: string;
  srvIf: string;
  tmp: string;
  cleanup(): Promise<void>;
}

async function topology(): Promise<Topology> {
  const id = randomBytes(3).toString('hex');
  const t: Topology = {
    // Names a test run's leftover sweep knows (test/helpers/global-setup.ts TEST_NETNS): a killed run's namespaces
    // go with the next run; a live one is safe because this run holds RUN_LOCK (bench/run.ts, or main below).
    srvNs: `dzr-${id}0`,
    cliNs: `dzr-${id}1`,
    srvIf: `dzrs${id}`,
    tmp: mkdtempSync(join(tmpdir(), 'dzr-')),
    cleanup: async () => {
      // deleteNetns kills what still runs inside (only our children), which takes the veth with it
      for (const ns of [t.srvNs, t.cliNs]) await deleteNetns(ns).catch((err: Error) => console.error(`dhcp-rate: ${err.message}`));
      rmSync(t.tmp, { recursive: true, force: true });
    },
  };
  const cliIf = `dzrc${id}`;
  try {
    await createNetns(t.srvNs);
    await createNetns(t.cliNs);
    await addVethPair(t.srvIf, cliIf, { peerNetns: t.cliNs });
    await moveToNetns(t.srvIf, t.srvNs);
    await setAddr(t.srvIf, `${SERVER_IP}/${LINK_PREFIX}`, t.srvNs);
    await setAddr(cliIf, `${RELAY_IP}/${LINK_PREFIX}`, t.cliNs);
    await linkUp(t.srvIf, t.srvNs);
    await linkUp(cliIf, t.cliNs);
    await waitFor(`${t.srvIf} LOWER_UP`, async () => (await ip(['-br', 'link', 'show', 'dev', t.srvIf], t.srvNs)).includes('LOWER_UP'));
    return t;
  } catch (err) {
    await t.cleanup();
    throw err;
  }
}

async function waitFor(what: string, ok: () => Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await ok())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Something listens on SERVER_IP:67 (or *:67) in the server namespace. */
async function listening67(ns: string): Promise<boolean> {
  const r = await runInNetns(ns, 'ss', ['-Hlun', 'sport = :67'], { timeoutMs: 5000 });
  return r.stdout.includes(`${SERVER_IP}:67`);
}

// ------------------------------------------------------------------ the two servers

interface Running {
  pid: number;
  note?: string;
  /** Ours only: the DHCP server's counters. */
  stats?: () => Promise<Record<string, number>>;
  stop(): Promise<void>;
}

function exited(child: ChildProcess): Promise<void> {
  return new Promise((r) => (child.exitCode !== null || child.signalCode !== null ? r() : child.once('exit', () => r())));
}

async function stopChild(child: ChildProcess, graceful: () => void): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  graceful();
  const done = await Promise.race([exited(child).then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 5000))]);
  if (!done) {
    child.kill('SIGKILL');
    await exited(child);
  }
}

async function startOurs(t: Topology, subnet: string, boards: ServerSpec['boards']): Promise<Running> {
  const dir = mkdtempSync(join(t.tmp, 'ours-'));
  const spec: ServerSpec = { dataDir: join(dir, 'data'), bootIp: SERVER_IP, subnet, boards };
  const specFile = join(dir, 'spec.json');
  writeFileSync(specFile, JSON.stringify(spec));
  // `ip netns exec` execs in place: the child's pid is node's own.
  const child = spawn('ip', ['netns', 'exec', t.srvNs, process.execPath, ...(process.env.DHCP_RATE_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.DHCP_RATE_PROF}`] : []), '--import', 'tsx', join(REPO_ROOT, 'bench/dhcp-rate/server.ts'), specFile], {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    env: { ...process.env, LOG_LEVEL: 'warn' },
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const pending: Array<(m: ChildMessage) => void> = [];
  child.on('message', (m: ChildMessage) => pending.shift()?.(m));
  const next = (timeoutMs: number) =>
    new Promise<ChildMessage>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`our server: no answer in ${timeoutMs} ms; stderr: ${stderr}`)), timeoutMs);
      const onExit = () => reject(new Error(`our server exited (${child.exitCode ?? child.signalCode}); stderr: ${stderr}`));
      child.once('exit', onExit);
      pending.push((m) => (clearTimeout(timer), child.off('exit', onExit), resolve(m)));
    });
  const stop = () => stopChild(child, () => child.connected ? child.send({ cmd: 'stop' }) : child.kill('SIGTERM'));
  try {
    const ready = await next(120_000);
    if ('error' in ready) throw new Error(`our server failed to start: ${ready.error}`);
    if (!('ready' in ready)) throw new Error(`our server: unexpected ${JSON.stringify(ready)}`);
    await waitFor('our server on :67', () => listening67(t.srvNs));
    return {
      pid: ready.pid,
      note: `${ready.boards} boards, started in ${ready.startMs} ms`,
      stats: async () => {
        const p = next(10_000);
        child.send({ cmd: 'stats' });
        const m = await p;
        if (!('stats' in m)) throw new Error(`our server: unexpected ${JSON.stringify(m)}`);
        return m.stats;
      },
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

async function startKea(t: Topology, boards: ServerSpec['boards']): Promise<Running> {
  const dir = mkdtempSync(join(t.tmp, 'kea-'));
  const config = {
    Dhcp4: {
      'interfaces-config': { interfaces: [t.srvIf], 'dhcp-socket-type': 'udp' },
      'lease-database': { type: 'memfile', persist: true, name: join(dir, 'leases4.csv'), 'lfc-interval': 0 },
      'valid-lifetime': 3600, // ours: dhcp.leaseSeconds default
      // What ours puts in every reply: siaddr/sname/file, options 66 and 67 even unasked, hostname.
      'next-server': SERVER_IP,
      'server-hostname': SERVER_IP,
      'boot-file-name': 'boot.scr.uimg',
      'option-data': [
        { name: 'tftp-server-name', data: SERVER_IP, 'always-send': true },
        { name: 'boot-file-name', data: 'boot.scr.uimg', 'always-send': true },
      ],
      subnet4: [
        {
          id: 1,
          subnet: RATE_CONFIG.subnet,
          reservations: boards.map((b, i) => ({ 'hw-address': b.mac, 'ip-address': b.ip, hostname: `b-${i}` })),
        },
      ],
      loggers: [{ name: 'kea-dhcp4', output_options: [{ output: join(dir, 'kea.log') }], severity: 'WARN' }],
    },
  };
  const file = join(dir, 'kea-dhcp4.json');
  writeFileSync(file, JSON.stringify(config, null, 2));
  const child = execInNetns(t.srvNs, 'kea-dhcp4', ['-c', file], { env: { ...process.env, KEA_PIDFILE_DIR: dir, KEA_LOCKFILE_DIR: dir } });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-4000)));
  child.stderr!.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-4000)));
  const stop = () => stopChild(child, () => child.kill('SIGTERM'));
  try {
    await waitFor('kea-dhcp4 on :67', async () => {
      if (child.exitCode !== null) throw new Error(`kea-dhcp4 exited ${child.exitCode}: ${out}`);
      return listening67(t.srvNs);
    });
    return { pid: child.pid!, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

// ------------------------------------------------------------------ one measurement

interface Step {
  rate: number;
  /** DISCOVERs perfdhcp sent per second (≥ 95% of rate, or the client was the limit). */
  sentPerS: number;
  offersPerS: number;
  acksPerS: number;
  dropsPct: number;
  clean: boolean;
  /** Server CPU seconds per completed exchange (ACK received), µs. */
  cpuUsPerExchange: number | null;
  /** Of one core, over the test period. */
  serverCpuPct: number;
  perfdhcpCpuPct: number;
  /** Busy CPU on the host (of one core, 2 cores = 200) that was neither the server, perfdhcp nor this bench: other work. */
  othersCpuPct: number;
  avgDelayMs: { do: number | null; ra: number | null };
  note?: string;
}

async function measure(t: Topology, server: Running, rate: number, clients: number): Promise<Step> {
  const perf = (r: number, seconds: number) =>
    runInNetns(t.cliNs, 'perfdhcp', ['-4', '-l', RELAY_IP, '-r', String(r), '-R', String(clients), '-b', `mac=${MAC_BASE}`, '-p', String(seconds), '-W', '1000000', SERVER_IP], {
      timeoutMs: (seconds + 30) * 1000,
    });
  // Warm-up, unmeasured: a fresh server (ours: V8's JIT; Kea: its caches) gets one second at a low rate first.
  if (WARMUP_S > 0) await perf(WARMUP_RATE, WARMUP_S);
  const cpu0 = { server: cpuSeconds(server.pid), perf: childrenCpuSeconds(), host: hostBusySeconds(), self: process.cpuUsage() };
  const r = await perf(rate, STEP_S);
  const cpu = cpuSeconds(server.pid) - cpu0.server;
  const perfCpu = childrenCpuSeconds() - cpu0.perf;
  const selfCpu = Object.values(process.cpuUsage(cpu0.self)).reduce((a, b) => a + b, 0) / 1e6;
  const wall = STEP_S + 1; // the test period and perfdhcp's exit wait
  const others = Math.max(0, hostBusySeconds() - cpu0.host - cpu - perfCpu - selfCpu);
  const p: PerfReport = parsePerfdhcp(r.stdout);
  if (!p.do || !p.ra) throw new Error(`perfdhcp at ${rate}/s: no report (exit ${r.code ?? r.signal}${r.timedOut ? ', timed out' : ''}): ${r.stderr.slice(0, 300)} ${r.stdout.slice(0, 300)}`);
  // Drops: requests not answered, over both exchanges (a REQUEST is only sent for an OFFER received).
  const lost = p.do.sent - p.do.received + (p.ra.sent - p.ra.received);
  const dropsPct = (100 * lost) / Math.max(1, p.do.sent + p.ra.sent);
  const sentPerS = p.do.sent / STEP_S;
  return {
    rate,
    sentPerS: Math.round(sentPerS),
    offersPerS: Math.round(p.do.received / STEP_S),
    acksPerS: Math.round(p.ra.received / STEP_S),
    dropsPct: +dropsPct.toFixed(2),
    clean: dropsPct < CLEAN_DROPS_PCT && sentPerS >= 0.95 * rate,
    cpuUsPerExchange: p.ra.received ? Math.round((cpu / p.ra.received) * 1e6) : null,
    serverCpuPct: Math.round((100 * cpu) / STEP_S),
    perfdhcpCpuPct: Math.round((100 * perfCpu) / STEP_S),
    othersCpuPct: Math.round((100 * others) / wall),
    avgDelayMs: { do: p.do.avgDelayMs, ra: p.ra.avgDelayMs },
    ...(sentPerS < 0.95 * rate
      ? { note: 'perfdhcp sent < 95% of the rate: client-limited' }
      : !(dropsPct < CLEAN_DROPS_PCT) && cpu / STEP_S < 0.9 && (cpu + perfCpu + others) / STEP_S > 1.8
        ? { note: `host saturated (server ${Math.round((100 * cpu) / STEP_S)}% of a core, other work ${Math.round((100 * others) / wall)}%): drops not from a busy server` }
        : {}),
  };
}

const highestClean = (steps: Step[]): number | null => {
  // The highest rate below which every step was clean (a later clean step after a failure is noise, not capacity).
  let best: number | null = null;
  for (const s of [...steps].sort((a, b) => a.rate - b.rate)) {
    if (!s.clean) break;
    best = s.rate;
  }
  return best;
};

// ------------------------------------------------------------------ the bench

export async function run(): Promise<object> {
  if (process.getuid?.() !== 0) return { skipped: 'needs root (network namespaces)' };
  const t = await topology();
  const live = new Set<Running>();
  const onSignal = () => void Promise.all([...live].map((s) => s.stop())).finally(() => t.cleanup().finally(() => process.exit(130)));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const use = async <T>(start: Promise<Running>, fn: (s: Running) => Promise<T>): Promise<T> => {
    const s = await start;
    live.add(s);
    try {
      return await fn(s);
    } finally {
      await s.stop();
      live.delete(s);
    }
  };
  try {
    // Part 1: rising rates. At each rate REPEATS runs of each server, the order alternating (ours, Kea;
    // Kea, ours; …), each on a fresh server; the run with the fewest drops counts (other work on the
    // host only ever adds drops), all runs are kept.
    const rateBoards = Array.from({ length: CLIENTS }, (_, r) => ({ mac: askedMac(r), ip: ipOf(10 + r) }));
    const oursOnce = (rate: number) =>
      use(startOurs(t, RATE_CONFIG.subnet, rateBoards), async (s) => {
        const step = await measure(t, s, rate, CLIENTS);
        return { ...step, ignored: (await s.stats!()).ignored ?? 0 }; // unknown MACs: 0 unless perfdhcp's MACs aren't the enrolled ones
      });
    const keaOnce = (rate: number) => use(startKea(t, rateBoards), (s) => measure(t, s, rate, CLIENTS));
    const ours: Array<Best<Step & { ignored: number }>> = [];
    const kea: Array<Best<Step>> = [];
    for (const rate of PARTS.includes('rate') ? RATES : []) {
      const o: Array<Step & { ignored: number }> = [];
      const k: Step[] = [];
      for (let i = 0; i < REPEATS; i++) {
        if (i % 2 === 0) (o.push(await oursOnce(rate)), k.push(await keaOnce(rate)));
        else (k.push(await keaOnce(rate)), o.push(await oursOnce(rate)));
      }
      ours.push(best(o));
      kea.push(best(k));
      console.error(`dhcp-rate ${rate}/s: ours ${o.map((x) => `${x.acksPerS}/s ${x.dropsPct}%`).join(', ')} · kea ${k.map((x) => `${x.acksPerS}/s ${x.dropsPct}%`).join(', ')}`);
    }
    const oursBest = highestClean(ours);
    const keaBest = highestClean(kea);
    const atKea = keaBest === null ? undefined : ours.find((s) => s.rate === keaBest);
    const keaAt = keaBest === null ? undefined : kea.find((s) => s.rate === keaBest);
    const goal = {
      target: "ours clean (< 1% drops) at Kea's highest clean rate",
      keaHighestClean: keaBest,
      oursAtThatRate: atKea ? { acksPerS: atKea.acksPerS, dropsPct: atKea.dropsPct } : null,
      keaAtThatRate: keaAt ? { acksPerS: keaAt.acksPerS, dropsPct: keaAt.dropsPct } : null,
      hit: atKea ? atKea.clean : null,
    };

    // Part 2: lookup cost vs enrolled boards, at a rate ours held cleanly.
    const scaleRate = Number(process.env.DHCP_SCALE_RATE ?? 0) || (oursBest ?? Math.min(...RATES));
    const scaling: Array<Best<Step & { boards: number; ignored: number }>> = [];
    for (const n of PARTS.includes('scaling') ? SCALE_BOARDS : []) {
      const filler = Array.from({ length: n - SCALE_ASKED }, (_, i) => ({ mac: macOf(0x98, i), ip: ipOf(256 + i) }));
      const asked = Array.from({ length: SCALE_ASKED }, (_, r) => ({ mac: askedMac(r), ip: ipOf(10 + r) }));
      const runs = [];
      for (let i = 0; i < REPEATS; i++) {
        runs.push(
          await use(startOurs(t, SCALE_SUBNET, [...filler, ...asked]), async (s) => {
            const step = await measure(t, s, scaleRate, SCALE_ASKED);
            return { boards: n, note: s.note, ...step, ignored: (await s.stats!()).ignored ?? 0 };
          }),
        );
      }
      scaling.push(best(runs));
      const last = scaling.at(-1)!;
      console.error(`dhcp-rate scaling ${n} boards: ${last.acksPerS} acks/s ${last.dropsPct}% ${last.cpuUsPerExchange} µs/exchange`);
    }
    const base = scaling[0]?.cpuUsPerExchange;
    const top = scaling.at(-1)?.cpuUsPerExchange;
    return {
      setup: {
        perfdhcp: `-4 -l ${RELAY_IP} -r <rate> -R <clients> -b mac=${MAC_BASE} -p ${STEP_S} -W 1000000 ${SERVER_IP} (relay, full DORA)`,
        clients: CLIENTS,
        stepSeconds: STEP_S,
        ours: 'startServer() in a child process (lab off, network driver none), boards enrolled before start',
        kea: 'kea-dhcp4 2.2, memfile (persist, temp dir), udp sockets, the same MACs as host reservations, default threading (single)',
        clean: `drops < ${CLEAN_DROPS_PCT}% and perfdhcp sent ≥ 95% of the rate`,
        repeats: `${REPEATS} runs per cell, order alternating, each on a fresh server after 1 s at ${WARMUP_RATE}/s; the run with the fewest drops is reported`,
      },
      rate: ours.map((o, i) => ({ rate: o.rate, ours: o, kea: kea[i] })),
      highestClean: { ours: oursBest, kea: keaBest },
      goal,
      scaling: {
        rate: scaleRate,
        asked: `${SCALE_ASKED} boards, enrolled last`,
        steps: scaling,
        cpuGrowth: base && top ? +(top / base).toFixed(2) : null,
      },
    };
  } finally {
    for (const s of live) await s.stop().catch(() => {});
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await t.cleanup();
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  // A test run starting meanwhile would sweep this run's namespaces as leftovers (and kill perfdhcp): wait for the lock.
  for (let tries = 0; !(await holdRunLock()); tries++) {
    if (tries >= 60) throw new Error(`another run still holds ${RUN_LOCK} after 10 minutes`);
    console.error(`dhcp-rate: waiting for ${RUN_LOCK}`);
  }
  const r = (await run()) as Record<string, any>;
  console.log(JSON.stringify(r, null, 2));
  if (r.rate?.length) {
    console.table(
      r.rate.map((x: { rate: number; ours: Step; kea: Step }) => ({
        rate: x.rate,
        'ours DO/s': x.ours.offersPerS,
        'ours RA/s': x.ours.acksPerS,
        'ours drops%': x.ours.dropsPct,
        'ours µs/ex': x.ours.cpuUsPerExchange,
        'kea DO/s': x.kea.offersPerS,
        'kea RA/s': x.kea.acksPerS,
        'kea drops%': x.kea.dropsPct,
        'kea µs/ex': x.kea.cpuUsPerExchange,
        'others% (o/k)': `${x.ours.othersCpuPct}/${x.kea.othersCpuPct}`,
      })),
    );
  }
  if (r.scaling?.steps.length) {
    console.table(r.scaling.steps.map((s: Step & { boards: number }) => ({ boards: s.boards, 'RA/s': s.acksPerS, 'drops%': s.dropsPct, 'cpu µs/ex': s.cpuUsPerExchange, 'cpu%': s.serverCpuPct, 'others%': s.othersCpuPct })));
  }
  process.exit(0);
}

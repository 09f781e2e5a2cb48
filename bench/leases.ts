/**
 * Leases: (1) lease → `login:` in the lab, median of several, split by job step so the server's own
 * share is visible; (2) allocation throughput and p99 latency for 200 concurrent requests, beside a
 * reference in the same run: an endpoint that does nothing but one durable state write per request
 * (the floor any allocation that survives kill -9 has to pay).
 */
import { startLabServer } from '../test/helpers/lab-server.js';
import { fsyncReference } from './fsync-reference.js';
import { sessionConsole } from '../test/helpers/serial.js';
import { apiHarness } from '../test/helpers/api-harness.js';
import { holdRunLock, RUN_LOCK } from '../test/helpers/run-lock.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((xs.length * p) / 100))]!;
const ms = (a?: string, b?: string) => (a && b ? Date.parse(b) - Date.parse(a) : 0);

async function leaseToLogin() {
  const server = await startLabServer({ net: 90, prefix: 'dzl' });
  const admin = { role: 'admin' as const, tenantId: null, tokenId: null };
  await server.store.update((s) => void s.tenants.push({ id: 'bench', name: 'bench', createdAt: new Date().toISOString() }));
  const con = sessionConsole(server.consoles, server.inventory.list()[0]!.id);
  const runs: Array<Record<string, number>> = [];
  try {
    for (let i = 0; i < RUNS; i++) {
      const t0 = Date.now();
      const { lease, job } = await server.leases.create(admin, { kind: 'board', image: 'test', sshKeys: [], tenant: 'bench' });
      await con.out.waitFor('login:', 300_000, 'lab-1 (login prompt)');
      const total = Date.now() - t0;
      const j = server.leases.jobs.get(job.id)!;
      const step = (n: string) => j.steps.find((s) => s.name === n);
      const serverShare = ['disk', 'power'].reduce((a, n) => a + ms(step(n)?.startedAt, step(n)?.endedAt), 0);
      runs.push({
        total,
        allocate: ms(j.createdAt, step('disk')?.startedAt ?? step('power')?.startedAt),
        'disk+power (server)': serverShare,
        'power → DHCP ack': ms(step('power')?.endedAt, step('dhcp')?.endedAt),
        'DHCP → kernel fetched': ms(step('dhcp')?.endedAt, step('kernel')?.endedAt),
        'kernel → login:': total - ms(j.createdAt, step('kernel')?.endedAt),
      });
      await server.leases.settle((await server.leases.release('system', lease.id, 'bench')).job.id);
    }
  } finally {
    await con.close();
    await server.stop({ labDown: true });
  }
  const keys = Object.keys(runs[0]!);
  const med = Object.fromEntries(keys.map((k) => [k, median(runs.map((r) => r[k]!))]));
  return { runs: RUNS, medianMs: med, serverShare: +(med['disk+power (server)']! / med.total!).toFixed(3) };
}

async function allocation() {
  const N = 200;
  const h = await apiHarness({ timeouts: { actionMs: 60_000, bootMs: 60_000, osMs: 60_000 } });
  try {
    for (let i = 0; i < N; i++) {
      const r = await h.api('POST', '/boards', {
        id: `b-${i}`,
        mac: `02:00:00:01:${(i >> 8).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`,
        model: 'bananapi',
        arch: 'armv7',
        ip: `10.77.0.${i + 2}`,
        power: { driver: 'command', on: 'true', off: 'true', cycle: 'true' }, // boards never boot here: allocation is what we measure
        image: 'test',
      });
      if (r.status !== 201) throw new Error(`enroll b-${i}: ${JSON.stringify(r.body)}`);
    }
    const token = (await h.api('POST', '/tenants', { id: 'bench', name: 'bench' })).body.token;
    const timed = async (fn: () => Promise<{ status: number }>) => {
      const t = process.hrtime.bigint();
      const r = await fn();
      return { status: r.status, ms: Number(process.hrtime.bigint() - t) / 1e6 };
    };
    const t0 = Date.now();
    const ours = await Promise.all(Array.from({ length: N }, () => timed(() => h.api('POST', '/leases', { image: 'test' }, token))));
    const oursWall = Date.now() - t0;
    const granted = ours.filter((r) => r.status === 202).length;

    // Reference: one durable state write per request, nothing else.
    const reference = await fsyncReference();
    const url = reference.url;
    const t1 = Date.now();
    const ref = await Promise.all(Array.from({ length: N }, () => timed(() => fetch(url, { method: 'POST' }).then(async (r) => (await r.text(), r)))));
    const refWall = Date.now() - t1;
    await reference.close();
    // end the jobs (they wait for DHCP that never comes): a release cancels each one
    await Promise.all(h.store.state.leases.map(async (l) => h.leases.settle((await h.leases.release('system', l.id, 'bench')).job.id)));
    return {
      requests: N,
      granted,
      ours: { perSecond: Math.round((N / oursWall) * 1000), p50Ms: +pct(ours.map((r) => r.ms), 50).toFixed(1), p99Ms: +pct(ours.map((r) => r.ms), 99).toFixed(1) },
      reference: { perSecond: Math.round((N / refWall) * 1000), p50Ms: +pct(ref.map((r) => r.ms), 50).toFixed(1), p99Ms: +pct(ref.map((r) => r.ms), 99).toFixed(1) },
      throughputRatio: +(refWall / oursWall).toFixed(2),
    };
  } finally {
    await h.close();
  }
}

export async function run(parts = ["allocation", "leaseToLogin"]) {
  return {
    ...(parts.includes("allocation") ? { allocation: await allocation() } : {}),
    ...(parts.includes("leaseToLogin") ? { leaseToLogin: await leaseToLogin() } : {}),
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  if (!(await holdRunLock())) console.warn(`another test or benchmark run holds ${RUN_LOCK}`);
  run(process.argv.slice(2).length ? process.argv.slice(2) : undefined).then((r) => console.log(JSON.stringify(r, null, 2)));
}

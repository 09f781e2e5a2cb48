/**
 * The history log (src/store/history.ts): finished jobs and long-released leases leave the state file,
 * and stay readable by id, to their tenant only, until the history's keep period ends.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { HistoryLog } from '../../src/store/history.js';
import { apiHarness } from '../helpers/api-harness.js';

let h: Awaited<ReturnType<typeof apiHarness>>;
let tokenA = '';
let tokenB = '';
const dir = mkdtempSync(join(tmpdir(), 'history-'));
const history = new HistoryLog(join(dir, 'history'), 30);
const power = { driver: 'command', on: 'true', off: 'true', cycle: 'true' };

beforeAll(async () => {
  h = await apiHarness({ history, timeouts: { actionMs: 2000, bootMs: 150, osMs: 150 } });
  for (let i = 1; i <= 2; i++) {
    const r = await h.api('POST', '/boards', { id: `b${i}`, mac: `02:00:00:00:02:0${i}`, model: 'bananapi', arch: 'armv7', ip: `10.77.0.${20 + i}`, power, image: 'test' });
    expect(r.status).toBe(201);
  }
  tokenA = (await h.api('POST', '/tenants', { id: 'alice', name: 'Alice' })).body.token;
  tokenB = (await h.api('POST', '/tenants', { id: 'bob', name: 'Bob' })).body.token;
});
afterAll(async () => {
  await h.close();
  rmSync(dir, { recursive: true, force: true });
});

it('a lease released long ago leaves the state with its jobs, and is still shown to its tenant alone', async () => {
  const created = await h.api('POST', '/leases', { image: 'test' }, tokenA);
  expect(created.status).toBe(202);
  const id = created.body.lease.id as string;
  await h.leases.settle(created.body.job.id); // its boot never comes: the job fails
  const rel = await h.api('DELETE', `/leases/${id}`, undefined, tokenA);
  await h.leases.settle(rel.body.job.id);
  const jobIds = h.store.state.jobs.filter((j) => j.leaseId === id).map((j) => j.id);
  expect(jobIds).toHaveLength(2);

  expect(h.store.state.leases.find((l) => l.id === id)!.bootToken).toEqual(expect.any(String)); // a secret the history must not keep
  expect(await h.leases.archive(3_600_000)).toBe(0); // released just now: it stays
  expect(await h.leases.archive(3_600_000, Date.now() + 3_700_000)).toBe(3);
  expect(h.store.state.leases.map((l) => l.id)).not.toContain(id);
  expect(h.store.state.jobs.filter((j) => j.leaseId === id)).toEqual([]);
  const files = readdirSync(join(dir, 'history'));
  expect(files).toEqual([expect.stringMatching(/^history-\d{4}-\d{2}-\d{2}\.jsonl$/)]);
  const line = readFileSync(join(dir, 'history', files[0]!), 'utf8').split('\n').find((l) => l.includes('"kind":"lease"'))!;
  expect(JSON.parse(line).data.bootToken).toBeUndefined(); // no secrets in the history

  const shown = await h.api('GET', `/leases/${id}`, undefined, tokenA);
  expect([shown.status, shown.body.state, shown.body.id]).toEqual([200, 'released', id]);
  for (const j of jobIds) expect((await h.api('GET', `/jobs/${j}`, undefined, tokenA)).body.id).toBe(j);
  // Another tenant gets what it gets for a lease that never existed.
  expect((await h.api('GET', `/leases/${id}`, undefined, tokenB)).status).toBe(404);
  expect((await h.api('GET', `/jobs/${jobIds[0]}`, undefined, tokenB)).status).toBe(404);
  expect((await h.api('GET', `/leases/nope`, undefined, tokenA)).status).toBe(404);
});

it('a live lease keeps its current job and its provision job; its other finished jobs leave the state', async () => {
  const created = await h.api('POST', '/leases', { image: 'test' }, tokenA);
  const id = created.body.lease.id as string;
  await h.leases.settle(created.body.job.id);
  const now = new Date().toISOString();
  const old = (n: number) => ({ id: `old-${n}`, kind: 'power' as const, leaseId: id, tenantId: 'alice', state: 'succeeded' as const, steps: [], params: {}, createdAt: now, endedAt: now });
  await h.store.update((s) => void s.jobs.push(old(1), old(2)));
  expect(await h.leases.archive(3_600_000)).toBe(2);
  const left = h.store.state.jobs.filter((j) => j.leaseId === id).map((j) => j.id);
  expect(left).toEqual([created.body.job.id]); // the provision job, which is also the lease's current one
  expect((await h.api('GET', '/jobs/old-2', undefined, tokenA)).body.kind).toBe('power');
  await h.leases.settle((await h.api('DELETE', `/leases/${id}`, undefined, tokenA)).body.job.id);
});

it('history files older than the keep period are deleted', async () => {
  expect(await history.prune(Date.now() + 29 * 86_400_000)).toBe(0);
  expect(await history.prune(Date.now() + 32 * 86_400_000)).toBe(1);
  expect(existsSync(join(dir, 'history')) && readdirSync(join(dir, 'history'))).toEqual([]);
  expect((await h.api('GET', '/jobs/old-2', undefined, tokenA)).status).toBe(404);
});

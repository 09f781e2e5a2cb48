/** LeaseService.leaseOnBoard (asked on every DHCP answer and TFTP request) follows leases as they start, end and are archived, without scanning. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { HistoryLog } from '../../src/store/history.js';
import { apiHarness } from '../helpers/api-harness.js';

let h: Awaited<ReturnType<typeof apiHarness>>;
let token = '';
const dir = mkdtempSync(join(tmpdir(), 'on-board-'));
const power = { driver: 'command', on: 'true', off: 'true', cycle: 'true' };

beforeAll(async () => {
  h = await apiHarness({ history: new HistoryLog(dir, 30), timeouts: { actionMs: 2000, bootMs: 150, osMs: 150 } });
  for (let i = 1; i <= 3; i++) expect((await h.api('POST', '/boards', { id: `b${i}`, mac: `02:00:00:00:03:0${i}`, model: 'bananapi', arch: 'armv7', ip: `10.77.0.${30 + i}`, power, image: 'test' })).status).toBe(201);
  token = (await h.api('POST', '/tenants', { id: 'alice', name: 'Alice' })).body.token;
});
afterAll(async () => {
  await h.close();
  rmSync(dir, { recursive: true, force: true });
});

it('follows a lease from start to release and archive', async () => {
  expect(h.leases.leaseOnBoard('b1')).toBeUndefined();
  const a = await h.api('POST', '/leases', { image: 'test', board: 'b1' }, token);
  expect(h.leases.leaseOnBoard('b1')?.id).toBe(a.body.lease.id);
  const b = await h.api('POST', '/leases', { image: 'test', board: 'b2' }, token);
  expect([h.leases.leaseOnBoard('b1')?.id, h.leases.leaseOnBoard('b2')?.id, h.leases.leaseOnBoard('b3')]).toEqual([a.body.lease.id, b.body.lease.id, undefined]);
  for (const r of [a, b]) await h.leases.settle(r.body.job.id);
  await h.leases.settle((await h.api('DELETE', `/leases/${a.body.lease.id}`, undefined, token)).body.job.id);
  expect(h.leases.leaseOnBoard('b1')).toBeUndefined();
  expect(h.leases.leaseOnBoard('b2')?.id).toBe(b.body.lease.id);
  await h.leases.archive(0, Date.now() + 1000);
  expect(h.leases.leaseOnBoard('b2')?.id).toBe(b.body.lease.id); // its position moved
  const c = await h.api('POST', '/leases', { image: 'test', board: 'b1' }, token);
  expect(h.leases.leaseOnBoard('b1')?.id).toBe(c.body.lease.id);

  // Counted, not timed: a lookup reads one lease, not all of them.
  const state = h.store.state as { leases: unknown[] };
  const real = state.leases;
  let touched = 0;
  state.leases = new Proxy(real, { get: (t, k, r) => (typeof k === 'string' && /^\d+$/.test(k) && touched++, Reflect.get(t, k, r)) });
  h.leases.leaseOnBoard('b2'); // a new array: the index is built once
  touched = 0;
  for (let i = 0; i < 50; i++) expect(h.leases.leaseOnBoard('b2')?.id).toBe(b.body.lease.id);
  state.leases = real;
  expect(touched).toBe(50);
  for (const r of [b, c]) await h.leases.settle((await h.api('DELETE', `/leases/${r.body.lease.id}`, undefined, token)).body.job.id);
});

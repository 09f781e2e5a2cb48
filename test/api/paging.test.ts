/** Lists are paged (src/api/paging.ts): bounded per request, followed by Link rel="next", the body still an array. */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { MAX_PAGE, nextPage } from '../../src/api/paging.js';
import { ADMIN, apiHarness } from '../helpers/api-harness.js';

let h: Awaited<ReturnType<typeof apiHarness>>;
let token = '';
const power = { driver: 'command', on: 'true', off: 'true', cycle: 'true' };

beforeAll(async () => {
  h = await apiHarness({ timeouts: { actionMs: 2000, bootMs: 150, osMs: 150 } });
  for (let i = 1; i <= 5; i++) expect((await h.api('POST', '/boards', { id: `p${i}`, mac: `02:00:00:00:04:0${i}`, model: 'bananapi', arch: 'armv7', ip: `10.77.0.${40 + i}`, power, image: 'test' })).status).toBe(201);
  token = (await h.api('POST', '/tenants', { id: 'alice', name: 'Alice' })).body.token;
});
afterAll(() => h.close());

async function pages(path: string, t = ADMIN) {
  const seen: string[][] = [];
  for (let next: string | undefined = path; next; ) {
    const res = await fetch(h.base + next, { headers: { authorization: `Bearer ${t}` } });
    expect(res.status).toBe(200);
    seen.push(((await res.json()) as Array<{ id: string }>).map((x) => x.id));
    next = nextPage(res.headers.get('link'));
  }
  return seen;
}

it('boards: pages of `limit`, in order, each linked to the next; the last has no link', async () => {
  expect(await pages('/boards?limit=2')).toEqual([['p1', 'p2'], ['p3', 'p4'], ['p5']]);
  expect(await pages('/boards')).toEqual([['p1', 'p2', 'p3', 'p4', 'p5']]);
  expect(await pages('/boards?limit=2', token)).toEqual([['p1', 'p2'], ['p3', 'p4'], ['p5']]); // a tenant's view pages the same
});

it('leases: a tenant pages its own', async () => {
  const ids: string[] = [];
  for (let i = 0; i < 3; i++) ids.push((await h.api('POST', '/leases', { image: 'test' }, token)).body.lease.id);
  expect((await pages('/leases?limit=2', token)).flat()).toEqual(ids);
  for (const id of ids) await h.leases.settle((await h.api('DELETE', `/leases/${id}`, undefined, token)).body.job.id);
});

it('bad paging is a 400 that says why', async () => {
  for (const q of ['limit=0', `limit=${MAX_PAGE + 1}`, 'limit=x', 'after=nobody']) {
    const r = await h.api('GET', `/boards?${q}`);
    expect([r.status, r.body.error], q).toEqual([400, expect.stringContaining('paging')]);
  }
});

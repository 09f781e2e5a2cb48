/**
 * Container failover through the lease state machine (issue #15 point 3): the leases on a shared board
 * that went down go `migrating`, then `active` on their new board with the same id (or `error` with
 * the reason), and the tenant's event stream sees each step. The moving itself (real Docker engines)
 * is test/containers/shared-pool.test.ts; this is the lease layer's bookkeeping of it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Lease } from '../../src/store/schema.js';
import { apiHarness } from '../helpers/api-harness.js';
import { until } from '../helpers/until.js';

let h: Awaited<ReturnType<typeof apiHarness>>;
let tokenA = '';
let tokenB = '';

const container = (hostId: string, n: number) => ({ hostId, containerId: `${n}`.repeat(64).slice(0, 64), memoryMb: 64, cpus: 0.5, sshPort: 23000 + n });
const lease = (id: string, tenantId: string, state: Lease['state'], hostId: string, n: number): Lease => ({
  id, tenantId, kind: 'container', image: 'armhf-base', sshKeys: [], hostname: id, state, createdAt: new Date().toISOString(), container: container(hostId, n),
});

beforeAll(async () => {
  h = await apiHarness();
  tokenA = (await h.api('POST', '/tenants', { id: 'alice', name: 'A' })).body.token;
  tokenB = (await h.api('POST', '/tenants', { id: 'bob', name: 'B' })).body.token;
  // Container leases as the container driver leaves them (no engine here: the records are what matters).
  await h.store.update((s) => {
    s.leases.push(lease('l-moves', 'alice', 'active', 'shared-1', 1), lease('l-fails', 'alice', 'error', 'shared-1', 2), lease('l-gone', 'alice', 'released', 'shared-1', 3), lease('l-bob', 'bob', 'active', 'shared-1', 4));
  });
});

afterAll(async () => {
  await h?.close();
});

function stream(token: string, ctl: AbortController) {
  const s = { text: '' };
  void (async () => {
    const res = await fetch(`${h.base}/events`, { headers: { authorization: `Bearer ${token}` }, signal: ctl.signal });
    const reader = res.body!.getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      s.text += Buffer.from(value).toString();
    }
  })().catch(() => {});
  return s;
}

/** The states a stream reported for one lease, in order. */
const statesOf = (text: string, id: string) =>
  text
    .split('\n')
    .filter((l) => l.startsWith('data: ') && l.includes(`"id":"${id}"`))
    .map((l) => (JSON.parse(l.slice(6)) as { state?: string }).state)
    .filter(Boolean);

describe('container failover through the lease state machine', () => {
  it('migrating, then active on the new board with the same id; error with the reason when it could not move; tenants see only their own', async () => {
    const ctl = new AbortController();
    const a = stream(tokenA, ctl);
    const b = stream(tokenB, ctl);
    try {
      await until('streams open', () => a.text.includes(': dozen events') && b.text.includes(': dozen events'), { timeoutMs: 5000 });

      const marked = await h.leases.beginFailover(['l-moves', 'l-fails', 'l-gone', 'l-bob'], 'shared-1');
      expect(marked.sort()).toEqual(['l-bob', 'l-fails', 'l-moves']); // a released lease stays released
      const during = (await h.api('GET', '/leases/l-moves', undefined, tokenA)).body;
      expect(during).toMatchObject({ state: 'migrating', stateReason: expect.stringContaining('shared board shared-1 went down') });
      // Nothing may race the new container: a release waits until the move is over.
      const rel = await h.api('DELETE', '/leases/l-moves', undefined, tokenA);
      expect([rel.status, rel.body.error]).toEqual([409, 'lease l-moves is migrating to another shared board; release it once it is active (or error)']);

      await h.leases.recordFailover({
        moved: [
          { leaseId: 'l-moves', container: container('shared-2', 5) },
          { leaseId: 'l-bob', container: container('shared-2', 6) },
        ],
        failed: [{ leaseId: 'l-fails', from: 'shared-1', error: 'no shared board has 64 MiB free' }],
      });
      const after = (await h.api('GET', '/leases/l-moves', undefined, tokenA)).body;
      expect(after).toMatchObject({ id: 'l-moves', state: 'active', container: { hostId: 'shared-2', sshPort: 23005 } });
      expect(after.stateReason).toBeUndefined();
      // The operator reads the reason; the tenant its gist, the internal detail behind an error id.
      expect((await h.api('GET', '/leases/l-fails')).body).toMatchObject({ state: 'error', stateReason: 'shared board shared-1 went down and the container could not be moved: no shared board has 64 MiB free' });
      expect((await h.api('GET', '/leases/l-fails', undefined, tokenA)).body).toMatchObject({ state: 'error', stateReason: expect.stringMatching(/^shared board shared-1 went down and the container could not be moved/) });
      expect((await h.api('GET', '/leases/l-gone', undefined, tokenA)).body.state).toBe('released');

      await until('A sees both of its leases settle', () => statesOf(a.text, 'l-moves').length >= 2 && statesOf(a.text, 'l-fails').length >= 2, { timeoutMs: 5000 });
      expect(statesOf(a.text, 'l-moves')).toEqual(['migrating', 'active']);
      expect(statesOf(a.text, 'l-fails')).toEqual(['migrating', 'error']);
      await until('B sees its own', () => statesOf(b.text, 'l-bob').length >= 2, { timeoutMs: 5000 });
      expect(statesOf(b.text, 'l-bob')).toEqual(['migrating', 'active']);
      expect(a.text).not.toContain('l-bob');
      expect(b.text).not.toContain('l-moves');

      // Active again: the tenant can release it as usual.
      expect((await h.api('DELETE', '/leases/l-moves', undefined, tokenA)).status).toBe(202);
    } finally {
      ctl.abort();
    }
  });

  it('a lease left migrating by a server that stopped mid-move is marked error at start, and can be released', async () => {
    await h.store.update((s) => void s.leases.push({ ...lease('l-stuck', 'alice', 'migrating', 'shared-1', 7), stateReason: 'shared board shared-1 went down: …' }));
    expect(await h.leases.endInterruptedMigrations()).toBe(1);
    expect((await h.api('GET', '/leases/l-stuck')).body).toMatchObject({ state: 'error', stateReason: expect.stringContaining('the server stopped while this container was being moved') });
    expect(await h.leases.endInterruptedMigrations()).toBe(0);
    expect((await h.api('DELETE', '/leases/l-stuck', undefined, tokenA)).status).toBe(202);
  });
});

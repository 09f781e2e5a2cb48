/**
 * Container failover through the lease state machine (issue #15 point 3): the leases on a shared board
 * that went down go `migrating`, then `active` on their new board with the same id (or `error` with
 * the reason), and the tenant's event stream sees each step. The moving itself (real Docker engines)
 * is test/containers/shared-pool.test.ts; this is the lease layer's bookkeeping of it.
 */
import { EventEmitter } from 'node:events';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ContainerLeaseDriver } from '../../src/containers/driver.js';
import { watchFailover } from '../../src/containers/failover.js';
import { containerRecords, failoverOutcome } from '../../src/containers/lease-port.js';
import type { RecordedContainerLease } from '../../src/containers/types.js';
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
    s.leases.push(lease('l-moves', 'alice', 'active', 'shared-1', 1), lease('l-fails', 'alice', 'active', 'shared-1', 2), lease('l-gone', 'alice', 'released', 'shared-1', 3), lease('l-bob', 'bob', 'active', 'shared-1', 4), lease('l-err', 'alice', 'error', 'shared-1', 8));
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

      const marked = await h.leases.beginFailover(['l-moves', 'l-fails', 'l-gone', 'l-bob', 'l-err'], 'shared-1');
      expect(marked.sort()).toEqual(['l-bob', 'l-fails', 'l-moves']); // only active leases move: released and error stay
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
      // A move reported for a released lease (released before failover looked) never revives it.
      await h.leases.recordFailover({ moved: [{ leaseId: 'l-gone', container: container('shared-2', 9) }], failed: [] });
      expect((await h.api('GET', '/leases/l-gone')).body).toMatchObject({ state: 'released', container: { hostId: 'shared-1' } });

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

  it('through the watcher: only the leases marked migrating move, and a failure to record leaves none migrating', async () => {
    await h.store.update((s) => {
      s.leases.push(lease('w-active', 'alice', 'active', 'shared-3', 1), lease('w-releasing', 'alice', 'releasing', 'shared-3', 2), lease('w-other', 'alice', 'active', 'shared-4', 3));
    });
    // The driver's side of a move is Docker (test/containers/shared-pool.test.ts); here it records what it was asked.
    const pool = Object.assign(new EventEmitter(), { hosts: () => [], isUsable: () => true });
    const asked: string[] = [];
    const driver = {
      failover: true,
      pool,
      recreate: async (rec: RecordedContainerLease) => {
        asked.push(rec.leaseId);
        return { leaseId: rec.leaseId, tenantId: 'alice', hostId: 'shared-5', containerId: 'e'.repeat(64), sshHost: '127.0.0.1', sshPort: 23100, network: 'n', spec: { memoryMb: 64, cpus: 0.5 } };
      },
    } as unknown as ContainerLeaseDriver;
    let failRecord = true;
    const settled = new Promise<void>((resolve) => {
      const stop = watchFailover(driver, {
        records: () => containerRecords(h.store.state.leases),
        onStart: (recorded, down) => h.leases.beginFailover(recorded.map((r) => r.leaseId), down.id),
        onResult: async (r) => {
          if (failRecord) {
            failRecord = false;
            throw new Error('state file gone'); // the first recording fails; the watcher reports the leases as not moved
          }
          await h.leases.recordFailover(failoverOutcome(r));
          stop();
          resolve();
        },
      });
    });
    pool.emit('down', { id: 'shared-3', health: 'down', markedDown: true });
    await settled;
    expect(asked).toEqual(['w-active']); // not the releasing lease, not the other board's
    expect((await h.api('GET', '/leases/w-active')).body).toMatchObject({ state: 'error', stateReason: expect.stringContaining('failover failed: state file gone') });
    expect((await h.api('GET', '/leases/w-releasing')).body.state).toBe('releasing');
    expect((await h.api('GET', '/leases/w-other')).body.state).toBe('active');
  });
});

/**
 * The keep-ready policy (src/shared-boards/keep-ready.ts) over the real lease service and store: it takes
 * available whole boards until K are shared, gives back only boards it took itself, and only once they
 * have run no container for idleMs. Boards here never boot (the `command` power driver runs `true`), so
 * their engine leases end in error: the policy's decisions are what is tested, not the boot.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ContainerPool } from '../../src/containers/pool.js';
import { EngineCa } from '../../src/engine-ca/index.js';
import { log } from '../../src/log.js';
import { BootEngineTls, KeepReady, SharedBoards } from '../../src/shared-boards/index.js';
import { apiHarness } from '../helpers/api-harness.js';

let h: Awaited<ReturnType<typeof apiHarness>>;
let shared: SharedBoards;
let pool: ContainerPool;
let clock = 1_000_000;
const IDLE = 60_000;

const roles = () => Object.fromEntries(h.store.state.boards.map((b) => [b.id, b.role ? `${b.role}/${b.sharedBy}` : 'whole']));
/** The engine leases' jobs and any release, ended. Nothing boots here, so an engine job fails: `booted`
 * then stands for the boot that did not happen (the lease active, its engine waiting for /_ping). */
const settleAll = async (booted = true) => {
  for (const j of h.store.state.jobs.filter((x) => x.state === 'running')) await h.leases.settle(j.id);
  if (booted) await h.store.update((s) => void s.leases.filter((l) => l.purpose === 'engine' && l.state === 'error').forEach((l) => (l.state = 'active')));
};

beforeAll(async () => {
  h = await apiHarness({ timeouts: { actionMs: 2000, bootMs: 100, osMs: 100 } });
  for (let i = 1; i <= 4; i++) {
    const r = await h.api('POST', '/boards', { id: `kr-${i}`, mac: `02:00:00:00:06:0${i}`, model: 'bananapi', arch: 'armv7', ip: `10.77.0.${60 + i}`, power: { driver: 'command', on: 'true', off: 'true', cycle: 'true' }, image: 'test' });
    expect(r.status).toBe(201);
  }
  const ca = EngineCa.open(join(mkdtempSync(join(tmpdir(), 'engine-ca-')), 'ca'));
  pool = new ContainerPool([]);
  shared = new SharedBoards({ store: h.store, leases: () => h.leases, pool, ca: () => ca, tls: new BootEngineTls(() => ca), bus: h.bus, events: h.events, log, image: 'test', readyTimeoutMs: 1000 });
  shared.start();
});
afterAll(async () => {
  shared?.stop();
  await h?.close();
});

it('takes boards until K are shared, gives back only its own, after idleMs without containers or at once when its engine failed', async () => {
  const policy = new KeepReady({ shared, store: h.store, log, keep: 2, idleMs: IDLE, now: () => clock });
  // kr-1 is in maintenance: passed over.
  await h.store.update((s) => void (s.boards.find((b) => b.id === 'kr-1')!.state = 'maintenance'));
  expect(await policy.tick()).toEqual(['kr-2: made shared (keep 2)', 'kr-3: made shared (keep 2)']);
  expect(roles()).toEqual({ 'kr-1': 'whole', 'kr-2': 'shared/policy', 'kr-3': 'shared/policy', 'kr-4': 'whole' });
  expect(await policy.tick()).toEqual([]); // K reached: nothing more
  await settleAll();

  // An operator makes kr-4 shared: three now, one more than K. Nothing goes back before idleMs.
  expect((await shared.setRole('kr-4', 'shared')).board.sharedBy).toBe('operator');
  await settleAll();
  clock += IDLE - 1;
  expect(await policy.tick()).toEqual([]);

  // kr-2 runs a container; after idleMs the idle policy board (kr-3) goes back, never the operator's kr-4.
  await h.store.update((s) =>
    void s.leases.push({ id: 'l-c0ffee0002', tenantId: 'x', kind: 'container', image: 'x', sshKeys: [], hostname: 'c', state: 'active', createdAt: new Date().toISOString(), container: { hostId: 'kr-2', containerId: 'c2', memoryMb: 64, cpus: 1 } }),
  );
  clock += 2;
  expect(await policy.tick()).toEqual(['kr-3: given back (idle, keep 2)']);
  await settleAll();
  expect(roles()).toEqual({ 'kr-1': 'whole', 'kr-2': 'shared/policy', 'kr-3': 'whole', 'kr-4': 'shared/operator' });
  expect(h.store.state.boards.find((b) => b.id === 'kr-3')!.state).toBe('available');

  // kr-2's container ends; it has been busy until now, so it stays until idle for idleMs, and even then
  // two are shared (kr-2 and kr-4) = K: nothing goes back.
  await h.store.update((s) => void (s.leases.find((l) => l.id === 'l-c0ffee0002')!.state = 'released'));
  clock += IDLE * 10;
  expect(await policy.tick()).toEqual([]);
  expect(roles()['kr-2']).toBe('shared/policy');

  // An engine that failed is no shared board for K: the policy gives its own back at once (busy or idle
  // time aside) and takes another; kr-3, given back above, is the free one.
  const fresh = new KeepReady({ shared, store: h.store, log, keep: 2, idleMs: IDLE, now: () => clock });
  await h.store.update((s) => void (s.leases.find((l) => l.purpose === 'engine' && l.boardId === 'kr-2' && l.state === 'active')!.state = 'error'));
  expect(shared.status('kr-2')!.engine).toBe('failed');
  expect(await fresh.tick()).toEqual(['kr-2: given back (its engine failed)', 'kr-3: made shared (keep 2)']);
  await settleAll();
  expect(roles()).toEqual({ 'kr-1': 'whole', 'kr-2': 'whole', 'kr-3': 'shared/policy', 'kr-4': 'shared/operator' });
  // kr-3's engine fails too: given back, and nothing taken: kr-1 is in maintenance, and kr-2 and kr-3,
  // whose engines failed, are not taken again for a while.
  await h.store.update((s) => void (s.leases.find((l) => l.purpose === 'engine' && l.boardId === 'kr-3' && l.state === 'active')!.state = 'error'));
  expect(await fresh.tick()).toEqual(['kr-3: given back (its engine failed)']);
  await settleAll();
  expect(roles()).toEqual({ 'kr-1': 'whole', 'kr-2': 'whole', 'kr-3': 'whole', 'kr-4': 'shared/operator' });
  expect(await fresh.tick()).toEqual([]);
});

/**
 * When a job's step changes reach the disk (src/leases/jobs.ts): quick steps ride along with the next
 * write, a step that waits on the board is on disk before it runs, a slow step's start is written after
 * RECORD_START_AFTER_MS, and a crash (the store reopened from disk) re-runs what was not written, never
 * skips it. A real Store on a temp folder; the "crash" is a second Store opened on what the first wrote.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Bus, type BusEvent } from '../../src/leases/bus.js';
import { JobRunner, newJob, RECORD_START_AFTER_MS, type StepImpl } from '../../src/leases/jobs.js';
import type { Job } from '../../src/store/schema.js';
import { Store } from '../../src/store/store.js';
import { until } from '../helpers/until.js';

const dirs: string[] = [];
const stores: Store[] = [];
afterEach(async () => {
  await Promise.all(stores.splice(0).map((s) => s.close().catch(() => {})));
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

async function open(dir?: string): Promise<{ store: Store; dir: string }> {
  dir ??= await mkdtemp(join(tmpdir(), 'job-runner-'));
  if (!dirs.includes(dir)) dirs.push(dir);
  const store = await Store.open(join(dir, 'state.json'));
  stores.push(store);
  return { store, dir };
}

/** A job for the steps named, recorded in the store (as allocation does). */
async function record(store: Store, names: string[]): Promise<Job> {
  const job = newJob('provision', 'l-1', 't-1', names as never);
  await store.update((s) => void s.jobs.push(job));
  return job;
}

const onDisk = (store: Store, jobId: string) => store.state.jobs.find((j) => j.id === jobId)!;
const states = (job: Job) => job.steps.map((s) => `${s.name}:${s.state}`);

/** A step that counts its runs and ends when told (or at once). */
function step(name: string, o: { waitsOnBoard?: boolean; hold?: Promise<void> } = {}): StepImpl & { runs: number } {
  const s = {
    name: name as StepImpl['name'],
    timeoutMs: 30_000,
    runs: 0,
    async run() {
      s.runs++;
      await o.hold;
    },
    ...(o.waitsOnBoard ? { beforeRetry: async () => {} } : {}),
  };
  return s;
}

describe('job step changes and the disk', () => {
  it('quick steps are written with the next step that waits on the board: one write, not six', async () => {
    const { store } = await open();
    const bus = new Bus();
    const seen: string[][] = [];
    bus.subscribe((ev: BusEvent) => ev.type === 'job' && seen.push(states(ev.data as Job)));
    const runner = new JobRunner(store, bus);
    const job = await record(store, ['network', 'disk', 'power', 'dhcp']);
    let release!: () => void;
    const waiting = step('dhcp', { waitsOnBoard: true, hold: new Promise<void>((r) => (release = r)) });
    const before = store.stats.writes;
    const done = runner.run(job.id, [step('network'), step('disk'), step('power'), waiting]);
    await until('the dhcp step runs', () => waiting.runs === 1, { timeoutMs: 5000 });
    // network, disk and power done, and dhcp running, in one write; on disk before the step waits.
    expect(store.stats.writes - before).toBe(1);
    expect(states(onDisk(store, job.id))).toEqual(['network:done', 'disk:done', 'power:done', 'dhcp:running']);
    // Subscribers saw every change as it happened.
    expect(seen.map((s) => s.join(' '))).toContain('network:running disk:pending power:pending dhcp:pending');
    release();
    const end = await done;
    expect(end.state).toBe('succeeded');
    expect(states(onDisk(store, job.id))).toEqual(['network:done', 'disk:done', 'power:done', 'dhcp:done']);
    expect(store.stats.writes - before).toBe(2); // and the job's end, with dhcp done
  });

  it('a cancel that comes while a waiting step\'s start is being written ends the job at once (a release never hangs)', async () => {
    const { store } = await open();
    const runner = new JobRunner(store, new Bus());
    const job = await record(store, ['power', 'dhcp']);
    const cancel = new AbortController();
    // The tenant's release lands in the moment the dhcp step's start is on its way to the disk (the first
    // store write after power, which is quick and rides along): after the loop's own check, before the
    // step runs. The board never answers DHCP here.
    let armed = false;
    const update = store.update.bind(store);
    store.update = ((fn) => {
      if (armed) (armed = false), cancel.abort('released by tenant');
      return update(fn);
    }) as typeof store.update;
    const power = { ...step('power'), run: async () => void (armed = true) };
    const dhcp = step('dhcp', { waitsOnBoard: true, hold: new Promise<void>(() => {}) });
    const ended = await Promise.race([runner.run(job.id, [power, dhcp], cancel.signal), new Promise<'hung'>((r) => setTimeout(() => r('hung'), 3000))]);
    expect(ended).not.toBe('hung'); // before the fix: it waited for the step's timeout (the lease's boot timeout)
    expect(ended).toMatchObject({ state: 'failed', error: 'dhcp: cancelled: released by tenant' });
    expect(dhcp.runs).toBe(0);
  });

  it('a slow step gets its start written after a moment; get() shows it at once', async () => {
    const { store } = await open();
    const runner = new JobRunner(store, new Bus());
    const job = await record(store, ['disk']);
    let release!: () => void;
    const slow = step('disk', { hold: new Promise<void>((r) => (release = r)) });
    const t0 = performance.now();
    const done = runner.run(job.id, [slow]);
    await until('the disk step runs', () => slow.runs === 1, { timeoutMs: 5000 });
    expect(states(runner.get(job.id)!)).toEqual(['disk:running']);
    expect(states(onDisk(store, job.id))).toEqual(['disk:pending']);
    await until('its start on disk', () => onDisk(store, job.id).steps[0]!.state === 'running', { timeoutMs: 5000 });
    expect(performance.now() - t0).toBeGreaterThanOrEqual(RECORD_START_AFTER_MS - 5);
    release();
    await done;
  });

  it('after a crash, steps whose end was not written run again (never skipped); a waiting step resumes as a retry', async () => {
    const first = await open();
    const job = await record(first.store, ['network', 'disk', 'dhcp']);
    // The "crash" comes as the disk step starts: network has ended, but only in memory.
    const disk = Object.assign(step('disk'), { run: () => first.store.close().then(() => new Promise<void>(() => {})) });
    void new JobRunner(first.store, new Bus()).run(job.id, [step('network'), disk, step('dhcp', { waitsOnBoard: true })]).catch(() => {});
    await until('the store closed by the crash', () => first.store.update(() => {}).then(() => false, () => true), { timeoutMs: 5000 });
    const second = await open(first.dir);
    expect(states(onDisk(second.store, job.id))).toEqual(['network:pending', 'disk:pending', 'dhcp:pending']);
    const again = { network: step('network'), disk: step('disk') };
    let cycles = 0;
    const waiting = Object.assign(step('dhcp'), { beforeRetry: async () => void cycles++ });
    const resumed = await new JobRunner(second.store, new Bus()).run(job.id, [again.network, again.disk, waiting]);
    expect(resumed.state).toBe('succeeded');
    expect([again.network.runs, again.disk.runs, waiting.runs, cycles]).toEqual([1, 1, 1, 0]); // from the first unwritten step

    // A crash while a step that waits on the board runs: its start was on disk, so it resumes as a retry.
    const third = await open();
    const job2 = await record(third.store, ['network', 'dhcp']);
    const w = step('dhcp', { waitsOnBoard: true, hold: new Promise<void>(() => {}) });
    void new JobRunner(third.store, new Bus()).run(job2.id, [step('network'), w]).catch(() => {});
    await until('the dhcp step runs', () => w.runs === 1, { timeoutMs: 5000 });
    await third.store.close();
    const fourth = await open(third.dir);
    expect(states(onDisk(fourth.store, job2.id))).toEqual(['network:done', 'dhcp:running']);
    let retried = 0;
    const net2 = step('network');
    const w2 = Object.assign(step('dhcp'), { beforeRetry: async () => void retried++ });
    await new JobRunner(fourth.store, new Bus()).run(job2.id, [net2, w2]);
    expect([net2.runs, retried, w2.runs]).toEqual([0, 1, 1]);
  });

  it('a store batch re-applied (another change in it threw) writes the staged changes all the same', async () => {
    const { store } = await open();
    const bus = new Bus();
    const runner = new JobRunner(store, bus);
    const job = await record(store, ['network', 'dhcp']);
    // A write in flight; then, in the next batch, the runner's write and after it a change that throws:
    // the store re-applies the runner's change, which must carry the same staged steps the second time.
    const inFlight = store.update((s) => void s.tenants.splice(0, 0));
    let thrown: Promise<unknown> | undefined;
    bus.subscribe((ev) => {
      if (ev.type === 'job' && (ev.data as Job).steps[1]!.state === 'running' && !thrown)
        queueMicrotask(() => (thrown = store.update(() => {
          throw new Error('boom');
        }).catch((e: Error) => e.message)));
    });
    let release!: () => void;
    const waiting = step('dhcp', { waitsOnBoard: true, hold: new Promise<void>((r) => (release = r)) });
    const done = runner.run(job.id, [step('network'), waiting]);
    await inFlight;
    await until('the dhcp step runs', () => waiting.runs === 1, { timeoutMs: 5000 });
    expect(await thrown).toBe('boom');
    expect(states(onDisk(store, job.id))).toEqual(['network:done', 'dhcp:running']);
    release();
    expect((await done).state).toBe('succeeded');
  });

  it("a job's end and what it settles elsewhere are one write, on disk together; a cancelled job settles nothing", async () => {
    const { store, dir } = await open();
    const runner = new JobRunner(store, new Bus());
    await store.update((s) => void s.tenants.push({ id: 't-settle', name: 'settled', createdAt: new Date().toISOString() } as never));
    const job = await record(store, ['network']);
    const before = store.stats.writes;
    let sawEnd = '';
    const end = await runner.run(job.id, [step('network')], undefined, (j, s) => {
      sawEnd = s.jobs.find((x) => x.id === j.id)!.state; // the job's end, in the same mutation
      s.tenants.find((t) => t.id === 't-settle')!.name = `settled by ${j.state}`;
    });
    expect([end.state, sawEnd]).toEqual(['succeeded', 'succeeded']);
    expect(store.stats.writes - before, 'network done, the end and the settle: one write').toBe(1);
    await store.close();
    const after = await open(dir); // what a crash right after that write leaves
    expect(after.store.state.tenants.find((t) => t.id === 't-settle')!.name).toBe('settled by succeeded');
    expect(onDisk(after.store, job.id).state).toBe('succeeded');

    const runner2 = new JobRunner(after.store, new Bus());
    const job2 = await record(after.store, ['network']);
    const ac = new AbortController();
    let settled = 0;
    const held = step('network', { hold: new Promise<void>(() => {}) });
    const run = runner2.run(job2.id, [held], ac.signal, () => void settled++);
    await until('the step runs', () => held.runs === 1, { timeoutMs: 5000 });
    ac.abort('released');
    expect((await run).state).toBe('failed');
    expect(settled, 'the canceller decides the lease, not the cancelled job').toBe(0);
  });
});

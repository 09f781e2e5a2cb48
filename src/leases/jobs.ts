import { errorId } from '../auth/redact.js';
import { randomBytes } from 'node:crypto';
import { log } from '../log.js';
import type { Job, JobStep, State } from '../store/schema.js';
import type { Store } from '../store/store.js';
import type { Bus } from './bus.js';
import type { StepName } from './steps.js';

/** One step of a job: an action with a timeout, retried once (after `beforeRetry`, e.g. a power cycle). */
export interface StepImpl {
  name: StepName;
  timeoutMs: number;
  run(signal: AbortSignal): Promise<void | 'skipped'>;
  beforeRetry?: () => Promise<void>;
}

/** Implementations keyed by step name: a record over a lease kind's names (steps.ts) cannot leave one out. */
export type StepImpls<N extends StepName> = Record<N, Omit<StepImpl, 'name'>>;

export function stepList<N extends StepName>(impls: StepImpls<N>): StepImpl[] {
  return (Object.keys(impls) as N[]).map((name) => ({ name, ...impls[name] }));
}

export class StepTimeout extends Error {}

export function newJob(kind: Job['kind'], leaseId: string, tenantId: string, steps: readonly StepName[], params: Record<string, string> = {}): Job {
  return {
    id: `j-${randomBytes(5).toString('hex')}`,
    kind,
    leaseId,
    tenantId,
    state: 'running',
    steps: steps.map((name) => ({ name, state: 'pending', attempts: 0 })),
    params,
    createdAt: new Date().toISOString(),
  };
}

/**
 * A step that ends sooner than this is recorded with the job's next write (the start of a step that
 * takes longer or waits on the board, or the job's end), not with two writes of its own: attaching a
 * port, cloning a disk and powering on take milliseconds, and each durable write is an fsync.
 */
export const RECORD_START_AFTER_MS = 200;

/**
 * Runs a recorded job's steps in order, so that after a crash the job resumes from the step that was
 * running (steps are written to be idempotent). A step that waits on the board has its start written
 * before it runs; any other once it has run for RECORD_START_AFTER_MS; a step's end goes with the next
 * write. Until written, changes are held here (get() and the bus show them at once), so a crash re-runs
 * a step that ended in the last moments before it, never skips one. Each step gets a timeout and one
 * retry; then the job fails with the step's reason.
 */
export class JobRunner {
  /** Step changes not written yet, per job, in order. */
  private readonly staged = new Map<string, Staged>();

  constructor(
    private readonly store: Store,
    private readonly bus: Bus,
  ) {}

  /** The job as it stands, its step changes not yet written included. */
  get(id: string): Job | undefined {
    const job = this.store.state.jobs.find((j) => j.id === id);
    const staged = this.staged.get(id);
    if (!job || !staged) return job;
    const view = structuredClone(job);
    applyStaged(view, staged);
    return view;
  }

  /**
   * Runs the job's remaining steps. `settle` writes what the job's end means for other records (its
   * lease, its board) in the same state write as the end itself, unless `cancel` fired: the canceller
   * decides those. Two writes would leave, after a crash between them, a succeeded job behind a lease
   * still `provisioning` that no restart resumes.
   */
  async run(jobId: string, impls: StepImpl[], cancel?: AbortSignal, settle?: JobSettle): Promise<Job> {
    const byName = new Map<string, StepImpl>(impls.map((s) => [s.name, s]));
    const end = (state: 'succeeded' | 'failed', error?: string) =>
      this.finish(jobId, state, error, (j, s) => {
        if (!cancel?.aborted) settle?.(j, s);
      });
    for (;;) {
      if (cancel?.aborted) return this.finish(jobId, 'failed', cancelled(cancel));
      const job = this.get(jobId); // with the staged changes: a step that just ended is done here
      if (!job) throw new Error(`job ${jobId} vanished`);
      const step = job.steps.find((s) => s.state !== 'done' && s.state !== 'skipped');
      if (!step) return end('succeeded');
      const impl = byName.get(step.name);
      if (!impl) return end('failed', `no implementation for step ${step.name}`);
      let lastError = '';
      let outcome: 'done' | 'skipped' | 'failed' = 'failed';
      // A step found running was cut short by a crash: it runs again as a retry (its beforeRetry restarts
      // what it waits for), even when the crash came during its last attempt — that attempt never ended.
      for (let attempt = Math.min(step.attempts, step.state === 'running' ? 1 : 2); attempt < 2; attempt++) {
        if (attempt > 0 && impl.beforeRetry) await impl.beforeRetry().catch((err) => log.warn({ err, jobId }, 'retry preparation failed'));
        this.stage(jobId, step.name, { state: 'running', attempts: attempt + 1, startedAt: new Date().toISOString(), error: undefined });
        // A step that waits on the board (it has a beforeRetry) is on disk before it runs: resumed after a
        // crash, it restarts the board instead of waiting for what already happened. Any other step gets
        // its start written once it has run for a moment (with whatever is staged before it).
        if (impl.beforeRetry) await this.flush(jobId);
        const recordStart = impl.beforeRetry
          ? undefined
          : setTimeout(() => void this.flush(jobId).catch((err) => log.warn({ err, jobId }, 'recording a job step failed')), RECORD_START_AFTER_MS);
        try {
          const r = await withTimeout(impl.run.bind(impl), impl.timeoutMs, `${step.name} timed out after ${impl.timeoutMs / 1000} s`, cancel);
          outcome = r === 'skipped' ? 'skipped' : 'done';
          break;
        } catch (err) {
          lastError = (err as Error).message;
          if (cancel?.aborted) break;
          log.warn({ jobId, step: step.name, attempt: attempt + 1, err: lastError, errorId: errorId(lastError) }, 'job step failed');
        } finally {
          clearTimeout(recordStart);
        }
      }
      this.stage(jobId, step.name, { state: outcome, endedAt: new Date().toISOString(), error: outcome === 'failed' ? lastError : undefined });
      if (outcome === 'failed') {
        log.warn({ jobId, errorId: errorId(`${step.name}: ${lastError}`), err: lastError }, 'job failed');
        return end('failed', `${step.name}: ${lastError}`);
      }
    }
  }

  /** Holds a step change for the next write; subscribers see it now. */
  private stage(jobId: string, name: string, patch: Partial<JobStep>): void {
    let list = this.staged.get(jobId);
    if (!list) this.staged.set(jobId, (list = []));
    list.push({ name, patch });
    const job = this.get(jobId);
    if (job) this.bus.publish({ type: 'job', tenantId: job.tenantId, data: job });
  }

  /** Writes the staged step changes (the ones staged by the time the write runs). */
  private flush(jobId: string): Promise<void> {
    return this.writeStaged(jobId, () => undefined);
  }

  private async finish(jobId: string, state: 'succeeded' | 'failed', error?: string, settle?: JobSettle): Promise<Job> {
    const job = await this.writeStaged(jobId, (j, s) => {
      j.state = state;
      j.endedAt = new Date().toISOString();
      if (error) j.error = error;
      settle?.(j, s);
      return structuredClone(j);
    });
    if (!job) throw new Error(`job ${jobId} vanished`);
    this.bus.publish({ type: 'job', tenantId: job.tenantId, data: job });
    return job;
  }

  /**
   * One store update of the job: its staged step changes, then `change`. The staged changes are taken
   * the first time the mutation runs and the same ones applied again on a replay (the store re-applies a
   * batch when another change in it throws); when the write fails they go back in front of anything
   * staged since.
   */
  private async writeStaged<T>(jobId: string, change: (j: Job, s: State) => T): Promise<T | undefined> {
    let taken: Staged | undefined;
    let took = false;
    try {
      return await this.store.update((s) => {
        if (!took) {
          took = true;
          taken = this.staged.get(jobId);
          this.staged.delete(jobId);
        }
        const j = s.jobs.find((x) => x.id === jobId);
        if (!j) return undefined;
        if (taken) applyStaged(j, taken);
        return change(j, s);
      });
    } catch (err) {
      if (taken) this.staged.set(jobId, [...taken, ...(this.staged.get(jobId) ?? [])]);
      throw err;
    }
  }
}

type Staged = Array<{ name: string; patch: Partial<JobStep> }>;

/** What a job's end changes beside the job, inside its state write (see JobRunner.run). */
export type JobSettle = (job: Job, s: State) => void;

function applyStaged(job: Job, staged: Staged): void {
  for (const { name, patch } of staged) {
    const st = job.steps.find((x) => x.name === name);
    if (!st) continue;
    Object.assign(st, patch);
    for (const k of Object.keys(patch) as Array<keyof JobStep>) if (patch[k] === undefined) delete st[k];
  }
}

/** How a cancelled job or step ends (a release names itself in the reason). */
const cancelled = (cancel: AbortSignal): string => `cancelled: ${cancel.reason ?? 'by request'}`;

async function withTimeout<T>(fn: (signal: AbortSignal) => Promise<T>, ms: number, message: string, cancel?: AbortSignal): Promise<T> {
  // A cancel that came while the step's start was being written fired no event this listener could see:
  // without this check the step would run on until its timeout (a release of a booting board hung).
  if (cancel?.aborted) throw new Error(cancelled(cancel));
  const ac = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  let onCancel: (() => void) | undefined;
  try {
    return await Promise.race([
      fn(ac.signal),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          ac.abort();
          reject(new StepTimeout(message));
        }, ms);
        onCancel = () => {
          ac.abort();
          reject(new Error(cancelled(cancel!)));
        };
        cancel?.addEventListener('abort', onCancel);
      }),
    ]);
  } finally {
    clearTimeout(timer);
    if (onCancel) cancel?.removeEventListener('abort', onCancel);
  }
}

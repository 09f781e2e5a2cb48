import { errorId } from '../auth/redact.js';
import { randomBytes } from 'node:crypto';
import { log } from '../log.js';
import type { Job, JobStep } from '../store/schema.js';
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
 * Runs a recorded job's steps in order, persisting every step change, so that after a crash the job
 * resumes from the step that was running (steps are written to be idempotent). Each step gets a
 * timeout and one retry; then the job fails with the step's reason.
 */
export class JobRunner {
  constructor(
    private readonly store: Store,
    private readonly bus: Bus,
  ) {}

  get(id: string): Job | undefined {
    return this.store.state.jobs.find((j) => j.id === id);
  }

  async run(jobId: string, impls: StepImpl[], cancel?: AbortSignal): Promise<Job> {
    const byName = new Map<string, StepImpl>(impls.map((s) => [s.name, s]));
    for (;;) {
      if (cancel?.aborted) return this.finish(jobId, 'failed', `cancelled: ${cancel.reason ?? 'by request'}`);
      const job = this.get(jobId);
      if (!job) throw new Error(`job ${jobId} vanished`);
      const step = job.steps.find((s) => s.state !== 'done' && s.state !== 'skipped');
      if (!step) return this.finish(jobId, 'succeeded');
      const impl = byName.get(step.name);
      if (!impl) return this.finish(jobId, 'failed', `no implementation for step ${step.name}`);
      let lastError = '';
      let outcome: 'done' | 'skipped' | 'failed' = 'failed';
      // A step found running was cut short by a crash: it runs again as a retry (its beforeRetry restarts
      // what it waits for), even when the crash came during its last attempt — that attempt never ended.
      for (let attempt = Math.min(step.attempts, step.state === 'running' ? 1 : 2); attempt < 2; attempt++) {
        if (attempt > 0 && impl.beforeRetry) await impl.beforeRetry().catch((err) => log.warn({ err, jobId }, 'retry preparation failed'));
        await this.setStep(jobId, step.name, { state: 'running', attempts: attempt + 1, startedAt: new Date().toISOString(), error: undefined });
        try {
          const r = await withTimeout(impl.run.bind(impl), impl.timeoutMs, `${step.name} timed out after ${impl.timeoutMs / 1000} s`, cancel);
          outcome = r === 'skipped' ? 'skipped' : 'done';
          break;
        } catch (err) {
          lastError = (err as Error).message;
          if (cancel?.aborted) break;
          log.warn({ jobId, step: step.name, attempt: attempt + 1, err: lastError, errorId: errorId(lastError) }, 'job step failed');
        }
      }
      await this.setStep(jobId, step.name, { state: outcome, endedAt: new Date().toISOString(), error: outcome === 'failed' ? lastError : undefined });
      if (outcome === 'failed') {
        log.warn({ jobId, errorId: errorId(`${step.name}: ${lastError}`), err: lastError }, 'job failed');
        return this.finish(jobId, 'failed', `${step.name}: ${lastError}`);
      }
    }
  }

  private async setStep(jobId: string, name: string, patch: Partial<JobStep>): Promise<void> {
    const job = await this.store.update((s) => {
      const j = s.jobs.find((x) => x.id === jobId)!;
      const st = j.steps.find((x) => x.name === name)!;
      Object.assign(st, patch);
      for (const k of Object.keys(patch) as Array<keyof JobStep>) if (patch[k] === undefined) delete st[k];
      return structuredClone(j);
    });
    this.bus.publish({ type: 'job', tenantId: job.tenantId, data: job });
  }

  private async finish(jobId: string, state: 'succeeded' | 'failed', error?: string): Promise<Job> {
    const job = await this.store.update((s) => {
      const j = s.jobs.find((x) => x.id === jobId)!;
      j.state = state;
      j.endedAt = new Date().toISOString();
      if (error) j.error = error;
      return structuredClone(j);
    });
    this.bus.publish({ type: 'job', tenantId: job.tenantId, data: job });
    return job;
  }
}

async function withTimeout<T>(fn: (signal: AbortSignal) => Promise<T>, ms: number, message: string, cancel?: AbortSignal): Promise<T> {
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
          reject(new Error(`cancelled: ${cancel?.reason ?? 'by request'}`));
        };
        cancel?.addEventListener('abort', onCancel);
      }),
    ]);
  } finally {
    clearTimeout(timer);
    if (onCancel) cancel?.removeEventListener('abort', onCancel);
  }
}

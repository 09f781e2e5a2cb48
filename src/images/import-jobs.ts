import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { HttpError } from '../util/errors.js';
import type { Manifest } from './catalog.js';

/** The steps of an import, in order (a path import skips `receive`). */
export const IMPORT_PHASES = ['receive', 'verify', 'expand', 'inspect', 'boot-files', 'checksum', 'install', 'done'] as const;
export type ImportPhase = (typeof IMPORT_PHASES)[number];

/** What the API and CLI show of an import job. */
export interface ImportJobView {
  id: string;
  name: string;
  state: 'running' | 'succeeded' | 'failed';
  phase: ImportPhase;
  /** Progress of the current phase; bytesTotal null when unknown (an upload without Content-Length). */
  bytesDone: number;
  bytesTotal: number | null;
  startedAt: string;
  endedAt?: string;
  /** What the import found and decided ("kernel /boot/vmlinuz-6.1.0-50-armmp from partition 1 (ext4)"). */
  notes: string[];
  /** On failure: the message and the HTTP status it maps to (400 bad input, 409 conflict, 500 ours). */
  error?: { status: number; message: string };
  /** On success: the new image's manifest. */
  image?: Manifest;
}

export class ImportJob {
  readonly view: ImportJobView;
  private readonly settled: Promise<void>;
  private resolve!: () => void;

  constructor(
    private readonly registry: ImportJobs,
    name: string,
  ) {
    this.view = {
      id: randomBytes(8).toString('hex'),
      name,
      state: 'running',
      phase: 'receive',
      bytesDone: 0,
      bytesTotal: null,
      startedAt: new Date().toISOString(),
      notes: [],
    };
    this.settled = new Promise((r) => (this.resolve = r));
  }

  get id(): string {
    return this.view.id;
  }

  phase(phase: ImportPhase, bytesTotal: number | null = null): void {
    Object.assign(this.view, { phase, bytesDone: 0, bytesTotal });
    this.registry.emit('update', this.view);
  }

  /** Progress within the phase; updates are coalesced by listeners, not here (cheap to call often). */
  progress(bytesDone: number): void {
    this.view.bytesDone = bytesDone;
    this.registry.emit('progress', this.view);
  }

  note(text: string): void {
    this.view.notes.push(text);
    this.registry.emit('update', this.view);
  }

  succeed(image: Manifest): void {
    Object.assign(this.view, { state: 'succeeded', phase: 'done', image, endedAt: new Date().toISOString() });
    if (this.view.bytesTotal !== null) this.view.bytesDone = this.view.bytesTotal;
    this.registry.emit('update', this.view);
    this.resolve();
  }

  fail(err: unknown): void {
    const status = err instanceof HttpError ? err.status : 500;
    Object.assign(this.view, { state: 'failed', error: { status, message: (err as Error).message ?? String(err) }, endedAt: new Date().toISOString() });
    this.registry.emit('update', this.view);
    this.resolve();
  }

  /** Resolves when the job has succeeded or failed (never rejects: look at view.state). */
  done(): Promise<void> {
    return this.settled;
  }
}

/**
 * Import jobs in memory: running ones, and finished ones for an hour (at most `keep`) so a client
 * polling `GET /v1/images/jobs/:id` sees how it ended. Events: 'update' (phase, notes, end) and
 * 'progress' (bytes), both with the job's view.
 */
export class ImportJobs extends EventEmitter {
  private readonly jobs = new Map<string, ImportJob>();
  constructor(
    private readonly keep = 100,
    private readonly keepMs = 3600_000,
  ) {
    super();
  }

  create(name: string): ImportJob {
    this.prune();
    const job = new ImportJob(this, name);
    this.jobs.set(job.id, job);
    return job;
  }

  get(id: string): ImportJobView | null {
    return this.jobs.get(id)?.view ?? null;
  }

  job(id: string): ImportJob | null {
    return this.jobs.get(id) ?? null;
  }

  list(): ImportJobView[] {
    return [...this.jobs.values()].map((j) => j.view);
  }

  /** The running import of this image name, if any. */
  running(name: string): ImportJobView | null {
    return [...this.jobs.values()].find((j) => j.view.name === name && j.view.state === 'running')?.view ?? null;
  }

  private prune(): void {
    const now = Date.now();
    const finished = [...this.jobs.values()].filter((j) => j.view.endedAt);
    for (const [i, j] of finished.entries()) {
      if (now - Date.parse(j.view.endedAt!) > this.keepMs || finished.length - i > this.keep) this.jobs.delete(j.id);
    }
  }
}

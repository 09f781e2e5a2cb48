import { mkdir, open, readFile, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Low } from 'lowdb';
import { z } from 'zod';
import { readFileIfExists, writeFileDurable } from './durable-file.js';
import { SCHEMA_VERSION, emptyState, migrations, stateSchema, type State } from './schema.js';

export class StoreError extends Error {}

/** lowdb adapter: schema-checked reads, atomic + durable writes. A bad file is an error, never reset. */
export class DurableJsonAdapter {
  /** The file is missing or older than this server: write it once at open. */
  stale = false;
  /** The document as it is on disk (last read or written): what memory goes back to when a change fails. */
  onDisk = '';
  constructor(readonly path: string) {}

  async read(): Promise<State | null> {
    const text = await readFileIfExists(this.path);
    this.stale = text === null;
    if (text === null) return null;
    this.onDisk = text;
    let raw: any;
    try {
      raw = JSON.parse(text);
    } catch (err) {
      throw new StoreError(`state file ${this.path} is not valid JSON (${(err as Error).message}); fix or move it away — it is never reset automatically`, { cause: err });
    }
    let version = typeof raw?.version === 'number' ? raw.version : NaN;
    if (version > SCHEMA_VERSION) {
      throw new StoreError(`state file ${this.path} has version ${version}, newer than this server (${SCHEMA_VERSION})`);
    }
    if (version < SCHEMA_VERSION) this.stale = true;
    while (version < SCHEMA_VERSION) {
      const step = migrations[version];
      if (!step) throw new StoreError(`state file ${this.path}: no migration from version ${raw?.version}`);
      raw = step(raw);
      version = raw.version;
    }
    const parsed = stateSchema.safeParse(raw);
    if (!parsed.success) {
      throw new StoreError(`state file ${this.path} does not match the schema: ${z.prettifyError(parsed.error)}`);
    }
    return parsed.data;
  }

  /** Compact: the file is rewritten on every change, and indentation made it ~40% larger and slower to write. */
  async write(data: State): Promise<void> {
    const text = JSON.stringify(data) + '\n';
    await writeFileDurable(this.path, text);
    this.onDisk = text;
  }

  /** The state as it is on disk, parsed afresh (our own text, checked when it was read or made). */
  fromDisk(): State {
    return JSON.parse(this.onDisk) as State;
  }
}

/** Locks this process holds (a pid file cannot tell our own live lock from one our pid left before a restart). */
const heldHere = new Set<string>();

/** One writer per state file: a pid lock beside it. A lock left by a dead process is taken over. */
async function acquireLock(lockPath: string): Promise<() => Promise<void>> {
  if (heldHere.has(lockPath)) throw new StoreError(`state file is already open in this process (lock ${lockPath})`);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fh = await open(lockPath, 'wx', 0o600);
      await fh.writeFile(String(process.pid));
      await fh.close();
      heldHere.add(lockPath);
      return async () => {
        heldHere.delete(lockPath);
        await unlink(lockPath).catch(() => {});
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const pid = Number((await readFile(lockPath, 'utf8').catch(() => '')).trim());
      if (pid && pid !== process.pid && isAlive(pid)) {
        throw new StoreError(`state file is in use by process ${pid} (lock ${lockPath})`);
      }
      await unlink(lockPath).catch(() => {});
    }
  }
  throw new StoreError(`could not take the lock ${lockPath}`);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

interface PendingUpdate {
  fn: (s: State) => unknown;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

/**
 * The state store. Mutations go through `update`, which applies them one at a time, in order, each
 * seeing the result of the last; each one's promise resolves once it is on disk.
 *
 * Group commit: mutations that arrive while a write is in flight are applied together after it and
 * written with one fsync, so N concurrent requests cost about one durable write, not N in a row.
 */
export class Store {
  private pending: PendingUpdate[] = [];
  private flushing: Promise<void> | undefined;
  /** Durable writes done, and mutations they carried (a ratio above 1 is group commit at work). */
  readonly stats = { writes: 0, updates: 0 };
  private constructor(
    private readonly db: Low<State>,
    private readonly adapter: DurableJsonAdapter,
    private readonly unlock: () => Promise<void>,
    readonly path: string,
  ) {}

  static async open(path: string): Promise<Store> {
    await mkdir(dirname(path), { recursive: true });
    const unlock = await acquireLock(`${path}.lock`);
    try {
      const adapter = new DurableJsonAdapter(path);
      const db = new Low<State>(adapter, emptyState());
      await db.read();
      if (adapter.stale) await db.write(); // new or migrated; an up-to-date file is not rewritten at every start
      else adapter.onDisk = JSON.stringify(db.data) + '\n'; // as checked (schema defaults filled): what a failed change goes back to
      return new Store(db, adapter, unlock, path);
    } catch (err) {
      await unlock();
      throw err;
    }
  }

  /** A read-only view of the current state. Callers must not mutate it. */
  get state(): Readonly<State> {
    return this.db.data;
  }

  /** Apply a mutation and persist it; mutations run one at a time in order. */
  update<T>(fn: (s: State) => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.pending.push({ fn, resolve: resolve as (v: unknown) => void, reject });
      this.kick();
    });
  }

  /** Starts a flush unless one runs; mutations never run inside the caller's own update() call. */
  private kick(): void {
    if (this.flushing) return;
    this.flushing = Promise.resolve()
      .then(() => this.flush())
      .finally(() => {
        this.flushing = undefined;
        if (this.pending.length) this.kick(); // arrived after the last round looked
      });
  }

  /**
   * Applies what is pending and writes it once; again while more arrived meanwhile. No copy of the state
   * is taken per change (at a full rack that copy cost more than the write): when a change throws,
   * memory goes back to what is on disk and the batch's earlier changes are applied again, so a failed
   * change leaves what the others did and nothing of its own.
   */
  private async flush(): Promise<void> {
    while (this.pending.length) {
      const batch = this.pending.splice(0);
      let applied: Array<{ u: PendingUpdate; value: unknown }> = [];
      for (const u of batch) {
        try {
          applied.push({ u, value: u.fn(this.db.data) });
        } catch (err) {
          u.reject(err);
          applied = this.replay(applied);
        }
      }
      if (!applied.length) continue;
      try {
        await this.db.write();
        this.stats.writes++;
        this.stats.updates += applied.length;
        for (const a of applied) a.u.resolve(a.value);
      } catch (err) {
        this.db.data = this.adapter.fromDisk(); // a failed write leaves memory as it is on disk
        for (const a of applied) a.u.reject(err);
      }
    }
  }

  /** Memory back to what is on disk, then `applied` again on it (their results are the ones returned). */
  private replay(applied: Array<{ u: PendingUpdate; value: unknown }>): Array<{ u: PendingUpdate; value: unknown }> {
    for (;;) {
      this.db.data = this.adapter.fromDisk();
      const again: typeof applied = [];
      let failed = -1;
      for (const [i, a] of applied.entries()) {
        try {
          again.push({ u: a.u, value: a.u.fn(this.db.data) });
        } catch (err) {
          a.u.reject(err); // it worked a moment ago on the same state; if not now, it is out, and never half-applied
          failed = i;
          break;
        }
      }
      if (failed < 0) return again;
      applied = applied.filter((_, i) => i !== failed);
    }
  }

  async close(): Promise<void> {
    await this.flushing;
    await this.unlock();
  }
}

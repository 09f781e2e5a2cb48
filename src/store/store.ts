import { mkdir, open, readFile, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Low } from 'lowdb';
import { z } from 'zod';
import { readFileIfExists, writeFileDurable } from './durable-file.js';
import { SCHEMA_VERSION, emptyState, migrations, stateSchema, type State } from './schema.js';

export class StoreError extends Error {}

/** lowdb adapter: schema-checked reads, atomic + durable writes. A bad file is an error, never reset. */
export class DurableJsonAdapter {
  constructor(readonly path: string) {}

  async read(): Promise<State | null> {
    const text = await readFileIfExists(this.path);
    if (text === null) return null;
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

  async write(data: State): Promise<void> {
    await writeFileDurable(this.path, JSON.stringify(data, null, 2) + '\n');
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

/**
 * The state store. Mutations go through `update`, which serialises them so each one sees the result
 * of the last and is on disk before its promise resolves.
 */
export class Store {
  private queue: Promise<unknown> = Promise.resolve();
  private constructor(
    private readonly db: Low<State>,
    private readonly unlock: () => Promise<void>,
    readonly path: string,
  ) {}

  static async open(path: string): Promise<Store> {
    await mkdir(dirname(path), { recursive: true });
    const unlock = await acquireLock(`${path}.lock`);
    try {
      const db = new Low<State>(new DurableJsonAdapter(path), emptyState());
      await db.read();
      await db.write();
      return new Store(db, unlock, path);
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
    const run = this.queue.then(async () => {
      const snapshot = structuredClone(this.db.data);
      let result: T;
      try {
        result = fn(this.db.data);
        await this.db.write();
      } catch (err) {
        this.db.data = snapshot; // a failed mutation or write leaves memory as it was on disk
        throw err;
      }
      return result;
    });
    this.queue = run.catch(() => {});
    return run;
  }

  async close(): Promise<void> {
    await this.queue;
    await this.unlock();
  }
}

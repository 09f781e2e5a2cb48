import { mkdir, open, readFile, unlink, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Low } from 'lowdb';
import { z } from 'zod';
import { readFileIfExists, writeFileDurable } from './durable-file.js';
import { applyOps, Shadows, track, type Op } from './journal.js';
import { SCHEMA_VERSION, emptyState, migrations, stateSchema, type State } from './schema.js';

export class StoreError extends Error {}

/** Every verify mismatch in this process (tests check it is empty after each file: test/helpers/store-verify.ts). */
export const verifyFailures: string[] = [];

/** lowdb adapter: schema-checked reads, atomic + durable writes. A bad file is an error, never reset. */
export class DurableJsonAdapter {
  /** The file is missing or older than this server: write it once at open. */
  stale = false;
  /** The document as it is on disk (last read or written): what memory goes back to when a change fails. */
  onDisk = '';
  /** The last journal line the snapshot includes (its `journalSeq`; 0 for a file from before the journal). */
  seq = 0;
  /** Journal lines to replay on the snapshot at read (those it already includes are skipped); set before read(). */
  journal: Array<{ seq: number; ops: Op[] }> = [];
  constructor(readonly path: string) {}

  async read(): Promise<State | null> {
    const text = await readFileIfExists(this.path);
    this.stale = text === null;
    if (text === null) {
      if (this.journal.length) throw new StoreError(`state journal ${this.path}.journal has lines but ${this.path} is missing; restore the file or move the journal away`);
      return null;
    }
    this.onDisk = text;
    let raw: any;
    try {
      raw = JSON.parse(text);
    } catch (err) {
      throw new StoreError(`state file ${this.path} is not valid JSON (${(err as Error).message}); fix or move it away — it is never reset automatically`, { cause: err });
    }
    this.seq = Number.isInteger(raw?.journalSeq) ? raw.journalSeq : 0;
    delete raw?.journalSeq;
    this.replayJournal(raw);
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

  /**
   * Journal lines after the snapshot's, in order, on the raw (not yet migrated) document: they were written
   * by a server of the snapshot's version. Lines the snapshot already holds (a crash between a snapshot
   * and emptying the journal) are skipped; a gap means lines are missing, and the file is refused.
   */
  private replayJournal(raw: any): void {
    for (const line of this.journal) {
      if (line.seq <= this.seq) continue;
      if (line.seq !== this.seq + 1) {
        throw new StoreError(`state journal ${this.path}.journal jumps from ${this.seq} to ${line.seq}: lines are missing; fix or move it away — it is never reset automatically`);
      }
      try {
        applyOps(raw, line.ops);
      } catch (err) {
        throw new StoreError(`state journal ${this.path}.journal line ${line.seq} does not apply: ${(err as Error).message}`, { cause: err });
      }
      this.seq = line.seq;
    }
  }

  /**
   * Compact: the file is rewritten at every snapshot, and indentation made it ~40% larger and slower to
   * write. It starts with the journal line it includes, so a journal not yet emptied is not applied twice.
   */
  async write(data: State): Promise<void> {
    const text = `{"journalSeq":${this.seq},${JSON.stringify(data).slice(1)}\n`;
    await writeFileDurable(this.path, text);
    this.onDisk = text;
  }

  /** The snapshot as it is on disk, parsed afresh (our own text, checked when it was read or made). */
  fromDisk(): State {
    const s = JSON.parse(this.onDisk);
    delete s.journalSeq;
    return s as State;
  }
}

function envBytes(name: string): number | undefined {
  const v = process.env[name];
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new StoreError(`${name}=${v}: not a byte count`);
  return n;
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

export interface StoreOptions {
  /**
   * Below this snapshot size every change rewrites the whole file, which is then always the whole state
   * (a lab, a small rack); from it on, changes are appended to `<file>.journal` and the file is rewritten
   * only when the journal has grown to the file's size (and at close). Default 256 KiB (about 100 boards
   * with their leases); 0: always the journal.
   */
  journalAboveBytes?: number;
  /** After every journal append, check that file + journal replay to what is in memory (tests; costs a parse of the state). */
  verify?: boolean;
}

/** The journal file: whole lines appended and made durable (fdatasync) per batch, emptied at each snapshot. */
class JournalFile {
  private constructor(
    private readonly fh: FileHandle,
    readonly path: string,
    public bytes: number,
  ) {}

  /** Opens (creating) the journal and reads its whole lines; a torn last line (a crash mid-append, never acknowledged) is dropped. */
  static async open(path: string): Promise<{ file: JournalFile; lines: Array<{ seq: number; ops: Op[] }> }> {
    const text = (await readFileIfExists(path)) ?? '';
    const fh = await open(path, 'a', 0o600);
    const dir = await open(dirname(path), 'r');
    await dir.sync().finally(() => dir.close());
    const lines: Array<{ seq: number; ops: Op[] }> = [];
    const parts = text.split('\n');
    parts.pop(); // after the last newline: empty, or a torn line
    for (const [i, part] of parts.entries()) {
      let line: any;
      try {
        line = JSON.parse(part);
      } catch (err) {
        await fh.close();
        throw new StoreError(`state journal ${path} line ${i + 1} is not valid JSON (${(err as Error).message}); fix or move it away — it is never reset automatically`, { cause: err });
      }
      if (!Number.isInteger(line?.seq) || !Array.isArray(line?.ops)) {
        await fh.close();
        throw new StoreError(`state journal ${path} line ${i + 1} is not a journal entry`);
      }
      lines.push(line);
    }
    return { file: new JournalFile(fh, path, Buffer.byteLength(text)), lines };
  }

  async append(line: string): Promise<void> {
    const before = this.bytes;
    const buf = Buffer.from(line);
    try {
      // A write can be short (a disk filling up takes what fits in the last page); go on until all of
      // it is written or the write fails, never acknowledging half a line.
      for (let done = 0; done < buf.length; ) done += (await this.fh.write(buf, done)).bytesWritten;
      await this.fh.datasync();
      this.bytes += buf.length;
    } catch (err) {
      // Leave no partial line for the next append to continue: cut back to the last whole one.
      await this.fh.truncate(before).catch(() => {});
      throw err;
    }
  }

  async empty(): Promise<void> {
    await this.fh.truncate(0);
    await this.fh.datasync();
    this.bytes = 0;
  }

  close(): Promise<void> {
    return this.fh.close();
  }
}

/**
 * The state store. Mutations go through `update`, which applies them one at a time, in order, each
 * seeing the result of the last; each one's promise resolves once it is on disk.
 *
 * Group commit: mutations that arrive while a write is in flight are applied together after it and
 * written with one fsync, so N concurrent requests cost about one durable write, not N in a row.
 *
 * On disk: the snapshot (`state.json`, through lowdb) and, for a state above `journalAboveBytes`, a
 * journal of what each batch changed (src/store/journal.ts), so a write costs what changed, not the rack.
 */
export class Store {
  private pending: PendingUpdate[] = [];
  private flushing: Promise<void> | undefined;
  /** The journal lines since the snapshot (their ops, as written): with the snapshot, what is on disk. */
  private journalOps: string[] = [];
  private readonly shadows = new Shadows();
  /** A journal append failed (its partial line cut back if the disk let us): the next batch writes a whole file and empties the journal. */
  private journalSuspect = false;
  private closed = false;
  /** Durable writes done, and mutations they carried (a ratio above 1 is group commit at work); snapshots among the writes. */
  readonly stats = { writes: 0, updates: 0, snapshots: 0, appends: 0 };
  private constructor(
    private readonly db: Low<State>,
    private readonly adapter: DurableJsonAdapter,
    private readonly journal: JournalFile,
    private readonly unlock: () => Promise<void>,
    readonly path: string,
    private readonly opts: Required<StoreOptions>,
  ) {}

  static async open(path: string, options: StoreOptions = {}): Promise<Store> {
    const opts: Required<StoreOptions> = {
      // DOZEN_STORE_JOURNAL_ABOVE: the test suite sets 0, so every mutation in it runs on the journal, checked (verify).
      journalAboveBytes: options.journalAboveBytes ?? envBytes('DOZEN_STORE_JOURNAL_ABOVE') ?? 256 * 1024,
      verify: options.verify ?? process.env.DOZEN_STORE_VERIFY === '1',
    };
    await mkdir(dirname(path), { recursive: true });
    const unlock = await acquireLock(`${path}.lock`);
    let journal: JournalFile | undefined;
    try {
      const adapter = new DurableJsonAdapter(path);
      const opened = await JournalFile.open(`${path}.journal`);
      journal = opened.file;
      adapter.journal = opened.lines;
      const db = new Low<State>(adapter, emptyState());
      await db.read();
      adapter.journal = [];
      // New, migrated, or with a journal to fold in: one snapshot now, and the journal starts empty.
      if (adapter.stale || journal.bytes > 0) {
        await db.write();
        await journal.empty();
      } else adapter.onDisk = `{"journalSeq":${adapter.seq},${JSON.stringify(db.data).slice(1)}\n`; // as checked (schema defaults filled): what a failed change goes back to
      return new Store(db, adapter, journal, unlock, path, opts);
    } catch (err) {
      await journal?.close().catch(() => {});
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
    // After close the lock is gone: a write now could race the next owner of the file.
    if (this.closed) return Promise.reject(new StoreError(`state store ${this.path} is closed`));
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
      let tracker = track(this.db.data);
      let applied: Array<{ u: PendingUpdate; value: unknown }> = [];
      for (const u of batch) {
        try {
          applied.push({ u, value: u.fn(tracker.root) });
        } catch (err) {
          u.reject(err);
          ({ applied, tracker } = this.replay(applied));
        }
      }
      if (!applied.length) continue;
      try {
        await this.persist(tracker);
        this.stats.writes++;
        this.stats.updates += applied.length;
        for (const a of applied) a.u.resolve(a.value);
      } catch (err) {
        this.db.data = this.fromDisk(); // a failed write leaves memory as it is on disk
        this.shadows.clear();
        for (const a of applied) a.u.reject(err);
      }
    }
  }

  /** One batch to disk: a journal line when the state is large and the journal is not yet, else a snapshot. */
  private async persist(tracker: ReturnType<typeof track<State>>): Promise<void> {
    const snapshotBytes = this.adapter.onDisk.length;
    const journaling = !this.journalSuspect && snapshotBytes >= this.opts.journalAboveBytes && this.journal.bytes < Math.max(snapshotBytes, 64 * 1024);
    if (!journaling) {
      await this.db.write();
      this.shadows.clear(); // the snapshot holds everything: a first touch after it records the element once
      this.stats.snapshots++;
      if (this.journal.bytes > 0 || this.journalSuspect) {
        await this.journal.empty();
        this.journalOps = [];
        this.journalSuspect = false;
      }
      return;
    }
    const ops = tracker.encode(this.shadows);
    if (ops === null) return; // nothing changed that the disk holds
    const seq = this.adapter.seq + 1;
    try {
      await this.journal.append(`{"seq":${seq},"ops":${ops}}\n`);
    } catch (err) {
      this.journalSuspect = true;
      throw err;
    }
    this.adapter.seq = seq;
    this.journalOps.push(ops);
    this.stats.appends++;
    if (this.opts.verify) this.verify(seq);
  }

  /** Tests: what the disk now holds must replay to what memory holds, or a change was missed. */
  private verify(seq: number): void {
    try {
      this.compare(seq);
    } catch (err) {
      // Loud even when the update's rejection lands in a background job whose log is silent in tests.
      verifyFailures.push((err as Error).message);
      console.error(`[store] ${(err as Error).message}`);
      throw err;
    }
  }

  private compare(seq: number): void {
    const fromDisk = JSON.stringify(this.fromDisk());
    const memory = JSON.stringify(this.db.data);
    if (fromDisk === memory) return;
    let at = 0;
    while (at < memory.length && memory[at] === fromDisk[at]) at++;
    throw new StoreError(`state journal line ${seq} does not reproduce memory: from character ${at}, memory has …${memory.slice(Math.max(0, at - 80), at + 80)}… and the disk …${fromDisk.slice(Math.max(0, at - 80), at + 80)}…`);
  }

  /** The state on disk: the snapshot with the journal's lines since it applied. */
  private fromDisk(): State {
    const s = this.adapter.fromDisk();
    for (const ops of this.journalOps) applyOps(s as unknown as Record<string, unknown>, JSON.parse(ops) as Op[]);
    return s;
  }

  /** Memory back to what is on disk, then `applied` again on it (their results are the ones returned). */
  private replay(applied: Array<{ u: PendingUpdate; value: unknown }>): { applied: Array<{ u: PendingUpdate; value: unknown }>; tracker: ReturnType<typeof track<State>> } {
    for (;;) {
      this.db.data = this.fromDisk();
      this.shadows.clear();
      const tracker = track(this.db.data);
      const again: typeof applied = [];
      let failed = -1;
      for (const [i, a] of applied.entries()) {
        try {
          again.push({ u: a.u, value: a.u.fn(tracker.root) });
        } catch (err) {
          a.u.reject(err); // it worked a moment ago on the same state; if not now, it is out, and never half-applied
          failed = i;
          break;
        }
      }
      if (failed < 0) return { applied: again, tracker };
      applied = applied.filter((_, i) => i !== failed);
    }
  }

  /** Folds the journal into the snapshot, so a stopped server leaves one whole file. Later updates are refused. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    while (this.flushing) await this.flushing;
    try {
      if (this.journal.bytes > 0) {
        await this.db.write();
        await this.journal.empty();
        this.journalOps = [];
      }
    } finally {
      await this.journal.close().catch(() => {});
      await this.unlock();
    }
  }
}

import { mkdir, open, rename, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { log } from '../log.js';

export interface LeaseLogOptions {
  /** Root directory; each lease gets `<dir>/<leaseId>/console.log[.N]`. */
  dir: string;
  /** Rotate console.log once it holds this many bytes. */
  rotateBytes: number;
  /** Rotated files kept (console.log.1 … .keep); older ones are deleted. A lease's log is at most rotateBytes × (keep + 1). */
  keep: number;
  /** Bytes allowed to wait for a slow disk before new output is dropped (with a marker in the log). */
  maxPendingBytes?: number;
}

const LEASE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export function leaseLogDir(root: string, leaseId: string): string {
  if (!LEASE_ID.test(leaseId) || leaseId.includes('..')) throw new Error(`invalid lease id for a log: ${JSON.stringify(leaseId)}`);
  return join(root, leaseId);
}

/** Appends a lease's console output to size-rotated files; writes are queued so the serial reader never waits on the disk. */
export class LeaseLogWriter {
  private fh?: FileHandle;
  private size = 0;
  private queue: Buffer[] = [];
  private pending = 0;
  private dropped = 0;
  private flushing?: Promise<void>;
  private closed = false;
  /** The log's file could not be made: said once, then the output is dropped quietly until close. */
  private failed = false;

  private constructor(
    private readonly dir: string,
    private readonly o: LeaseLogOptions,
  ) {}

  /**
   * A writer for the lease. Nothing touches the disk until the first output: starting a lease costs no
   * directory or file, and a board that never prints leaves none (readers treat that as an empty log).
   */
  static open(leaseId: string, o: LeaseLogOptions): LeaseLogWriter {
    return new LeaseLogWriter(leaseLogDir(o.dir, leaseId), o);
  }

  append(chunk: Buffer): void {
    if (this.closed || this.failed) return;
    if (this.pending + chunk.length > (this.o.maxPendingBytes ?? 8 << 20)) {
      this.dropped += chunk.length;
    } else {
      this.queue.push(chunk);
      this.pending += chunk.length;
    }
    this.flushing ??= this.flush().finally(() => (this.flushing = undefined));
  }

  /** Resolves when everything appended so far is on disk (readers call this first). */
  async idle(): Promise<void> {
    while (this.flushing) await this.flushing;
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.idle();
    await this.fh?.close();
    this.fh = undefined;
  }

  private async flush(): Promise<void> {
    try {
      if (!this.fh) {
        try {
          await mkdir(this.dir, { recursive: true });
          await this.reopen();
        } catch (err) {
          this.failed = true;
          log.warn({ err, dir: this.dir }, "console log cannot be created; this lease's output is not logged");
          this.queue = [];
          this.pending = 0;
          return;
        }
      }
      while (this.queue.length || this.dropped) {
        if (this.dropped) {
          const note = Buffer.from(`\r\n[dozen: ${this.dropped} bytes of console output not logged: disk too slow]\r\n`);
          this.dropped = 0;
          await this.writeRotating(note);
        }
        const buf = Buffer.concat(this.queue.splice(0));
        this.pending -= buf.length;
        await this.writeRotating(buf);
      }
    } catch (err) {
      log.warn({ err, dir: this.dir }, 'console log write failed; output dropped');
      this.queue = [];
      this.pending = 0;
    }
  }

  private async writeRotating(buf: Buffer): Promise<void> {
    let off = 0;
    while (off < buf.length) {
      if (this.size >= this.o.rotateBytes) await this.rotate();
      const n = Math.min(buf.length - off, this.o.rotateBytes - this.size);
      await this.fh!.write(buf, off, n);
      this.size += n;
      off += n;
    }
  }

  private async rotate(): Promise<void> {
    await this.fh?.close();
    const f = (i: number) => join(this.dir, i ? `console.log.${i}` : 'console.log');
    await rm(f(this.o.keep), { force: true });
    for (let i = this.o.keep - 1; i >= 0; i--) await rename(f(i), f(i + 1)).catch(() => {});
    if (this.o.keep === 0) await rm(f(0), { force: true });
    await this.reopen();
  }

  private async reopen(): Promise<void> {
    this.fh = await open(join(this.dir, 'console.log'), 'a');
    this.size = (await this.fh.stat()).size;
  }
}

/**
 * A lease's whole log, oldest first, or null if it has none. The files are opened up front, so a
 * rotation during the download neither skips nor repeats bytes.
 */
export async function readLeaseLog(root: string, leaseId: string, keep: number): Promise<Readable | null> {
  const dir = leaseLogDir(root, leaseId);
  const files: Array<{ fh: FileHandle; size: number }> = [];
  for (let i = keep; i >= 0; i--) {
    const fh = await open(join(dir, i ? `console.log.${i}` : 'console.log'), 'r').catch(() => null);
    if (fh) files.push({ fh, size: (await fh.stat()).size });
  }
  if (!files.length) return null;
  return Readable.from(
    (async function* () {
      try {
        for (const { fh, size } of files) {
          const buf = Buffer.alloc(64 * 1024);
          for (let pos = 0; pos < size; ) {
            const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, size - pos), pos);
            if (!bytesRead) break;
            pos += bytesRead;
            yield Buffer.from(buf.subarray(0, bytesRead));
          }
        }
      } finally {
        for (const { fh } of files) await fh.close().catch(() => {});
      }
    })(),
  );
}

export async function purgeLeaseLogFiles(root: string, leaseId: string): Promise<void> {
  await rm(leaseLogDir(root, leaseId), { recursive: true, force: true });
}

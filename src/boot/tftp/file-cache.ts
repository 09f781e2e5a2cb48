/**
 * Image files (kernels, initrds, device trees) kept whole in memory for the TFTP engines: in a boot
 * storm a thousand boards fetch the same few files, and a block served from memory costs the native
 * engine one `send` where a block from a descriptor costs a `pread` too (npm run bench -- storm).
 *
 * An entry is keyed by what identifies a file's content on disk (device, inode, size, mtime and ctime,
 * in nanoseconds), so an image re-imported by rename, or written in place, is a new entry. A file
 * changed within the last `settleMs` is not kept (git's "racy" rule): timestamps move once per clock
 * tick, so a file rewritten at the same size within a tick of being read would keep its key, and a
 * half-written read would be served to every board after it; such a file is read per transfer instead.
 *
 * Entries are dropped least recently used past `maxBytes`. A transfer still sending a dropped entry
 * keeps its buffer until it ends, and the cache finds that buffer again (a weak reference) rather than
 * read a second copy: memory stays about one copy per file being served, whatever the transfers.
 * Files larger than `maxFileBytes` (a quarter of the budget) are read from their descriptor.
 */
export interface FileIdentity {
  dev: bigint;
  ino: bigint;
  size: number;
  mtimeNs: bigint;
  ctimeNs: bigint;
}

interface Entry {
  size: number;
  bytes: Promise<Buffer>;
}

export interface FileCacheOptions {
  /** Memory for entries the cache holds. */
  maxBytes: number;
  /** Larger files are not kept (default: a quarter of maxBytes). */
  maxFileBytes?: number;
  /** A file whose ctime is this recent is not kept (default 2 s). */
  settleMs?: number;
  now?: () => number;
}

export class FileCache {
  private readonly entries = new Map<string, Entry>(); // in use order: the first is the least recent
  /** Buffers of dropped entries that transfers may still hold. */
  private readonly dropped = new Map<string, WeakRef<Buffer>>();
  private readonly forget = new FinalizationRegistry<string>((key) => {
    if (this.dropped.get(key)?.deref() === undefined) this.dropped.delete(key);
  });
  private used = 0;
  readonly maxBytes: number;
  readonly maxFileBytes: number;
  private readonly settleNs: bigint;
  private readonly now: () => number;
  /** Served from memory (`hits`, of which `revived` from a dropped entry still held) / read into it / not kept (too large, or changed too recently). */
  readonly stats = { hits: 0, revived: 0, loads: 0, tooLarge: 0, recent: 0 };

  constructor(o: FileCacheOptions) {
    this.maxBytes = o.maxBytes;
    this.maxFileBytes = o.maxFileBytes ?? Math.floor(o.maxBytes / 4);
    this.settleNs = BigInt(o.settleMs ?? 2000) * 1_000_000n;
    this.now = o.now ?? Date.now;
  }

  /**
   * The file's bytes, from memory or read now with `read` (one read for every request that comes while
   * it runs); undefined when the file is not kept. A failed or short read is not kept: the next request
   * reads again.
   */
  get(id: FileIdentity, read: () => Promise<Buffer>): Promise<Buffer> | undefined {
    if (id.size > this.maxFileBytes) {
      this.stats.tooLarge++;
      return undefined;
    }
    if (this.settleNs > 0n && BigInt(Math.floor(this.now())) * 1_000_000n - id.ctimeNs < this.settleNs) {
      this.stats.recent++;
      return undefined;
    }
    const key = `${id.dev}:${id.ino}:${id.size}:${id.mtimeNs}:${id.ctimeNs}`;
    const hit = this.entries.get(key);
    if (hit) {
      this.stats.hits++;
      this.entries.delete(key); // to the most recent end
      this.entries.set(key, hit);
      return hit.bytes;
    }
    const held = this.dropped.get(key)?.deref();
    if (held) {
      this.stats.hits++;
      this.stats.revived++;
      this.dropped.delete(key);
      this.keep(key, { size: id.size, bytes: Promise.resolve(held) });
      return Promise.resolve(held);
    }
    this.stats.loads++;
    const bytes = read().then((b) => {
      if (b.length !== id.size) throw new Error(`read ${b.length} bytes of a ${id.size}-byte file (it changed while read)`);
      return b;
    });
    const entry: Entry = { size: id.size, bytes };
    bytes.catch(() => this.drop(key, entry, false));
    this.keep(key, entry);
    return bytes;
  }

  /** Bytes held by entries (those being read included; not the dropped ones transfers still hold). */
  get bytesHeld(): number {
    return this.used;
  }

  private keep(key: string, entry: Entry): void {
    this.entries.set(key, entry);
    this.used += entry.size;
    for (const [k, e] of this.entries) {
      if (this.used <= this.maxBytes) break;
      this.drop(k, e, true);
    }
  }

  private drop(key: string, entry: Entry, remember: boolean): void {
    if (this.entries.get(key) !== entry) return;
    this.entries.delete(key);
    this.used -= entry.size;
    if (!remember) return;
    void entry.bytes.then(
      (b) => {
        if (this.entries.has(key)) return;
        this.dropped.set(key, new WeakRef(b));
        this.forget.register(b, key);
      },
      () => {},
    );
  }
}

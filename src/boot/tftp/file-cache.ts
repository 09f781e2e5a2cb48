/**
 * Image files (kernels, initrds, device trees) kept whole in memory for the TFTP engines: in a boot
 * storm a thousand boards fetch the same few files, and a block served from memory costs the native
 * engine one `send` where a block from a descriptor costs a `pread` too (npm run bench -- storm).
 *
 * An entry is keyed by what identifies a file's content on disk (device, inode, size, mtime and ctime),
 * so an image re-imported by rename, or written in place, is a new entry: a board never gets bytes the
 * file no longer holds as of its request. Entries are dropped least recently used past `maxBytes`; a
 * transfer still sending a dropped entry keeps its buffer until it ends. Files larger than a quarter of
 * the budget are not kept: they are read from their descriptor, as without a cache.
 */
export interface FileIdentity {
  dev: number;
  ino: number;
  size: number;
  mtimeMs: number;
  ctimeMs: number;
}

interface Entry {
  size: number;
  bytes: Promise<Buffer>;
}

export class FileCache {
  private readonly entries = new Map<string, Entry>(); // in use order: the first is the least recent
  private used = 0;
  /** Served from memory / read into it / too large to keep (for tests and stats). */
  readonly stats = { hits: 0, loads: 0, skipped: 0 };

  constructor(
    readonly maxBytes: number,
    readonly maxFileBytes = Math.floor(maxBytes / 4),
  ) {}

  /**
   * The file's bytes, from memory or read now with `read` (one read for every request that comes while
   * it runs); undefined when the file is not kept (too large, or a budget of 0). A failed or short read
   * is not kept: the next request reads again.
   */
  get(id: FileIdentity, read: () => Promise<Buffer>): Promise<Buffer> | undefined {
    if (id.size > this.maxFileBytes) {
      this.stats.skipped++;
      return undefined;
    }
    const key = `${id.dev}:${id.ino}:${id.size}:${id.mtimeMs}:${id.ctimeMs}`;
    const hit = this.entries.get(key);
    if (hit) {
      this.stats.hits++;
      this.entries.delete(key); // to the most recent end
      this.entries.set(key, hit);
      return hit.bytes;
    }
    this.stats.loads++;
    const bytes = read().then((b) => {
      if (b.length !== id.size) throw new Error(`read ${b.length} bytes of a ${id.size}-byte file (it changed while read)`);
      return b;
    });
    const entry: Entry = { size: id.size, bytes };
    this.entries.set(key, entry);
    this.used += id.size;
    bytes.catch(() => this.drop(key, entry));
    for (const [k, e] of this.entries) {
      if (this.used <= this.maxBytes) break;
      this.drop(k, e);
    }
    return bytes;
  }

  /** Bytes held (entries being read included). */
  get bytesHeld(): number {
    return this.used;
  }

  private drop(key: string, entry: Entry): void {
    if (this.entries.get(key) !== entry) return;
    this.entries.delete(key);
    this.used -= entry.size;
  }
}

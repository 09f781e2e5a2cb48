/**
 * Image files kept whole in memory for TFTP (src/boot/tftp/file-cache.ts, through fsHandler): one read
 * for a storm of requests, never stale bytes after a file changes (rewritten in place or replaced by
 * rename), the root's path checks before any of it, and the budget kept.
 */
import { mkdtemp, rename, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FileCache, type FileIdentity } from '../../src/boot/tftp/file-cache.js';
import { fsHandler } from '../../src/boot/tftp/fs-handler.js';
import { resolverHandler } from '../../src/boot/tftp/resolved.js';
import { TftpServer } from '../../src/boot/tftp/server.js';
import { tftpGet, TFTP_ENGINE } from '../helpers/tftp-test-client.js';

let root: string;
const client = { address: '127.0.0.1', port: 1 };
const id = (ino: number, size: number, mtime = 1): FileIdentity => ({ dev: 1n, ino: BigInt(ino), size, mtimeNs: BigInt(mtime), ctimeNs: BigInt(mtime) });
/** A cache that keeps files changed a moment ago too (the racy rule has a test of its own). */
const cacheOf = (maxBytes: number, maxFileBytes?: number) => new FileCache({ maxBytes, maxFileBytes, settleMs: 0 });
const bytes = (n: number, fill = 1) => Buffer.alloc(n, fill);

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'tftp-cache-'));
});
afterAll(() => rm(root, { recursive: true, force: true }));

describe('FileCache', () => {
  it('reads a file once for every request that comes while it loads, then serves it from memory', async () => {
    const cache = cacheOf(1000);
    let reads = 0;
    let release!: () => void;
    const read = () => (reads++, new Promise<Buffer>((r) => (release = () => r(bytes(100)))));
    const a = cache.get(id(1, 100), read)!;
    const b = cache.get(id(1, 100), read)!;
    release();
    expect((await a).equals(await b)).toBe(true);
    expect(await cache.get(id(1, 100), read)).toBe(await a);
    expect([reads, cache.stats]).toMatchObject([1, { hits: 2, loads: 1 }]);
  });

  it('a changed file (size, mtime or inode) is another entry; the least recently used go past the budget', async () => {
    const cache = cacheOf(250, 250);
    const read = (fill: number) => async () => bytes(100, fill);
    const first = await cache.get(id(1, 100, 1), read(1))!;
    expect((await cache.get(id(1, 100, 2), read(2))!)[0]).toBe(2); // rewritten in place
    expect(first[0]).toBe(1); // a transfer holding the old bytes keeps them
    await cache.get(id(1, 100, 1), read(9)); // used again: now the most recent
    await cache.get(id(2, 100), read(3)); // 300 bytes > 250: the least recent (mtime 2) goes
    expect(cache.bytesHeld).toBe(200);
    expect((await cache.get(id(1, 100, 1), read(9))!)[0]).toBe(1); // still held
    // Dropped, but its buffer is still in memory (nothing collected it yet): found again, not read.
    expect((await cache.get(id(1, 100, 2), read(4))!)[0]).toBe(2);
    expect(cache.stats).toMatchObject({ loads: 3, revived: 1 });
  });

  it('a dropped entry that a transfer still holds is found again, not read a second time', async () => {
    const cache = cacheOf(100, 100);
    let reads = 0;
    const read = (fill: number) => async () => (reads++, bytes(100, fill));
    const held = await cache.get(id(1, 100), read(1))!; // a transfer holds this buffer
    await cache.get(id(2, 100), read(2)); // over the budget: entry 1 is dropped
    expect(await cache.get(id(1, 100), read(9))).toBe(held); // the same buffer: one copy in memory
    expect([reads, cache.stats.revived]).toEqual([2, 1]);
  });

  it('a file changed in the last moments is not kept (a same-size rewrite within a clock tick keeps its key)', async () => {
    let now = 10_000;
    const cache = new FileCache({ maxBytes: 1000, now: () => now }); // settles after 2 s
    const changedAt = (ms: number): FileIdentity => ({ ...id(1, 100), mtimeNs: BigInt(ms) * 1_000_000n, ctimeNs: BigInt(ms) * 1_000_000n });
    expect(cache.get(changedAt(9_000), async () => bytes(100))).toBeUndefined();
    now = 11_001;
    expect(cache.get(changedAt(9_000), async () => bytes(100))).toBeDefined();
    expect(cache.stats).toMatchObject({ recent: 1, loads: 1 });
  });

  it('keeps no file over its per-file bound, nor a failed or short read', async () => {
    const cache = cacheOf(400); // files up to 100 bytes
    expect(cache.get(id(1, 101), async () => bytes(101))).toBeUndefined();
    await expect(cache.get(id(2, 50), async () => Promise.reject(new Error('EIO')))).rejects.toThrow('EIO');
    await expect(cache.get(id(3, 50), async () => bytes(40))).rejects.toThrow(/changed while read/);
    expect(cache.bytesHeld).toBe(0);
    expect((await cache.get(id(2, 50), async () => bytes(50, 7))!)[0]).toBe(7);
    expect(cache.stats).toMatchObject({ hits: 0, loads: 3, tooLarge: 1 });
  });
});

describe('fsHandler with a cache', () => {
  const servers: TftpServer[] = [];
  afterEach(async () => Promise.all(servers.splice(0).map((s) => s.stop())));

  it('serves from memory, and a file rewritten in place or replaced by rename is read again', async () => {
    // (settleMs 0: the racy rule, tested above, would serve these just-written files from their descriptors)
    const cache = cacheOf(1 << 20);
    const h = fsHandler(root, cache);
    await writeFile(join(root, 'vmlinuz'), bytes(5000, 1));
    const a = (await h('vmlinuz', client))!;
    expect([a.bytes?.[0], a.size, a.fd]).toEqual([1, 5000, undefined]);
    expect((await h('vmlinuz', client))!.bytes).toBe(a.bytes); // a hit: the same buffer
    await writeFile(join(root, 'vmlinuz'), bytes(5000, 2)); // same size, in place
    await utimes(join(root, 'vmlinuz'), new Date(), new Date(Date.now() + 5000)); // coarse clocks: mtime surely moves
    expect((await h('vmlinuz', client))!.bytes?.[0]).toBe(2);
    await writeFile(join(root, 'vmlinuz.new'), bytes(5000, 3));
    await rename(join(root, 'vmlinuz.new'), join(root, 'vmlinuz')); // an image re-imported
    expect((await h('vmlinuz', client))!.bytes?.[0]).toBe(3);
    expect(cache.stats).toMatchObject({ hits: 1, loads: 3 });
  });

  it('checks the path before the cache, and a file over the per-file bound is read from its descriptor', async () => {
    const cache = cacheOf(4000); // files up to 1000 bytes
    const h = fsHandler(root, cache);
    // Another root's file, in the same cache: a link to it from this root is refused all the same.
    const other = await mkdtemp(join(tmpdir(), 'tftp-cache-other-'));
    try {
      await writeFile(join(other, 'secret'), 'not for this root');
      expect((await fsHandler(other, cache)('secret', client))!.bytes?.toString()).toBe('not for this root');
      await symlink(join(other, 'secret'), join(root, 'secret-link'));
      await expect(h('secret-link', client)).rejects.toMatchObject({ code: 2 });
      await expect(h(`../${other.split('/').pop()}/secret`, client)).rejects.toMatchObject({ code: 2 });
      expect(cache.stats).toMatchObject({ loads: 1, hits: 0 });
    } finally {
      await rm(other, { recursive: true, force: true });
    }
    await writeFile(join(root, 'initrd'), bytes(1001));
    const big = (await h('initrd', client))!;
    expect([big.bytes, typeof big.fd, cache.stats.tooLarge]).toEqual([undefined, 'number', 1]);
    if ('destroy' in big.stream) big.stream.destroy(); // closes the descriptor
  });

  it('a server on the main thread (tftp.thread: false) gets the cache through its resolver too', async () => {
    const cache = cacheOf(1 << 20);
    await writeFile(join(root, 'dtb'), bytes(3000, 7));
    const h = resolverHandler(async (path) => ({ file: { root, name: path } }), cache);
    const first = (await h('dtb', client))!;
    expect([first.bytes?.[0], first.fd]).toEqual([7, undefined]);
    expect((await h('dtb', client))!.bytes, 'the second request: the same buffer').toBe(first.bytes);
    expect(cache.stats).toMatchObject({ hits: 1, loads: 1 });
  });

  it('a TFTP server with it serves every byte, and the new content once the file changes', async () => {
    const cache = cacheOf(64 << 20);
    const s = new TftpServer({ address: '127.0.0.1', port: 0, handler: fsHandler(root, cache), engine: TFTP_ENGINE });
    servers.push(s);
    await s.start();
    const kernel = Buffer.from(Array.from({ length: 3_000_000 }, (_, i) => (i * 7) & 255));
    await writeFile(join(root, 'kernel'), kernel);
    for (const windowsize of [1, 16]) {
      const got = await tftpGet('127.0.0.1', s.address().port, 'kernel', { options: { blksize: 1468, windowsize } });
      expect(got.data.equals(kernel)).toBe(true);
    }
    const next = Buffer.alloc(kernel.length, 0x5a);
    await writeFile(join(root, 'kernel.new'), next);
    await rename(join(root, 'kernel.new'), join(root, 'kernel'));
    expect((await tftpGet('127.0.0.1', s.address().port, 'kernel', { options: { blksize: 1468 } })).data.equals(next)).toBe(true);
    expect(cache.stats).toMatchObject({ hits: 1, loads: 2 });
  });
});

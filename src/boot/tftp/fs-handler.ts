/**
 * Serves files below one directory. Boards are untrusted: '..' segments, absolute paths and
 * symlinks resolving outside the root are refused with ERROR 2 (Access violation).
 */
import { constants, promises as fsp } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import type { FileCache } from './file-cache.js';
import { TftpError, type TftpHandler } from './server.js';

const ACCESS_VIOLATION = 2;

const inside = (root: string, p: string): boolean => p.startsWith(root.endsWith(path.sep) ? root : root + path.sep);

const errno = (e: unknown): string | undefined => (e as NodeJS.ErrnoException | undefined)?.code;
const NOT_FOUND = new Set(['ENOENT', 'ENOTDIR']);

/** `cache`: whole files kept in memory (file-cache.ts); without it every transfer reads its descriptor. */
export function fsHandler(root: string, cache?: FileCache): TftpHandler {
  let rootReal: Promise<string> | undefined;
  const realRoot = (): Promise<string> =>
    (rootReal ??= fsp.realpath(root).catch((e: unknown) => {
      rootReal = undefined; // root may appear later: don't cache the failure
      throw e;
    }));

  return async (name) => {
    // Backslashes count as separators too: some PXE clients send DOS-style paths.
    const segs = name.replaceAll('\\', '/').split('/');
    if (segs[0] === '') throw new TftpError(ACCESS_VIOLATION, 'Access violation: absolute path');
    if (segs.includes('..')) throw new TftpError(ACCESS_VIOLATION, "Access violation: '..' in path");
    const base = await realRoot();

    let real: string;
    try {
      real = await fsp.realpath(path.join(base, ...segs));
    } catch (e) {
      if (NOT_FOUND.has(errno(e) ?? '')) return null;
      throw new TftpError(ACCESS_VIOLATION, 'Access violation'); // EACCES, ELOOP...
    }
    if (!inside(base, real)) throw new TftpError(ACCESS_VIOLATION, 'Access violation: outside root');

    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(real, constants.O_RDONLY | constants.O_NOFOLLOW);
    } catch (e) {
      if (NOT_FOUND.has(errno(e) ?? '')) return null;
      throw new TftpError(ACCESS_VIOLATION, 'Access violation');
    }
    try {
      const st = await fh.stat({ bigint: true }); // nanosecond times and exact inode numbers: the cache's key
      if (!st.isFile()) throw new TftpError(ACCESS_VIOLATION, 'Access violation: not a regular file');
      const size = Number(st.size);
      // realpath and open are two steps: check what was actually opened, in case a directory
      // was swapped for a symlink in between (Linux exposes it in /proc).
      const opened = await fsp.readlink(`/proc/self/fd/${fh.fd}`).catch(() => real);
      if (!inside(base, opened)) throw new TftpError(ACCESS_VIOLATION, 'Access violation: outside root');
      const kept = cache?.get({ dev: st.dev, ino: st.ino, size, mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs }, () => fh.readFile());
      const bytes = kept && (await kept.catch(() => undefined)); // a failed read: served from the descriptor below
      if (bytes) {
        await fh.close();
        return { stream: Readable.from([bytes]), size: bytes.length, bytes };
      }
      // The stream closes the descriptor at its end or when the server destroys it. From offset 0: a failed
      // cache read may have moved the descriptor's position.
      return { stream: fh.createReadStream({ start: 0, highWaterMark: 64 * 1024 }), size, fd: fh.fd };
    } catch (e) {
      await fh.close();
      throw e;
    }
  };
}

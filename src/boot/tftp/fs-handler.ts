/**
 * Serves files below one directory. Boards are untrusted: '..' segments, absolute paths and
 * symlinks resolving outside the root are refused with ERROR 2 (Access violation).
 *
 * The checks (realpath, open, fstat, the /proc check) are synchronous on purpose: each is a few
 * microseconds on the local image root, and awaited they were five trips through libuv's four-thread
 * pool, shared with everything else on the process: 0.4-1.9 ms per request under a U-Boot transfer's
 * console traffic, against in.tftpd's whole 1 ms from request to first packet. Only the whole-file read
 * for the cache stays asynchronous. The TFTP thread (src/boot/tftp/worker.ts) is where this runs.
 */
import fs, { constants } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import type { FileCache } from './file-cache.js';
import { TftpError, type TftpHandler } from './server.js';

const ACCESS_VIOLATION = 2;

const inside = (root: string, p: string): boolean => p.startsWith(root.endsWith(path.sep) ? root : root + path.sep);

const errno = (e: unknown): string | undefined => (e as NodeJS.ErrnoException | undefined)?.code;
const NOT_FOUND = new Set(['ENOENT', 'ENOTDIR']);

const readWhole = (fd: number): Promise<Buffer> =>
  new Promise((resolve, reject) => fs.readFile(fd, (e, b) => (e ? reject(e) : resolve(b))));

/** `cache`: whole files kept in memory (file-cache.ts); without it every transfer reads its descriptor. */
export function fsHandler(root: string, cache?: FileCache): TftpHandler {
  let rootReal: string | undefined; // root may appear later: a failure is not kept

  return async (name) => {
    // Backslashes count as separators too: some PXE clients send DOS-style paths.
    const segs = name.replaceAll('\\', '/').split('/');
    if (segs[0] === '') throw new TftpError(ACCESS_VIOLATION, 'Access violation: absolute path');
    if (segs.includes('..')) throw new TftpError(ACCESS_VIOLATION, "Access violation: '..' in path");
    const base = (rootReal ??= fs.realpathSync.native(root));

    let real: string;
    try {
      real = fs.realpathSync.native(path.join(base, ...segs));
    } catch (e) {
      if (NOT_FOUND.has(errno(e) ?? '')) return null;
      throw new TftpError(ACCESS_VIOLATION, 'Access violation'); // EACCES, ELOOP...
    }
    if (!inside(base, real)) throw new TftpError(ACCESS_VIOLATION, 'Access violation: outside root');

    let fd: number;
    try {
      fd = fs.openSync(real, constants.O_RDONLY | constants.O_NOFOLLOW);
    } catch (e) {
      if (NOT_FOUND.has(errno(e) ?? '')) return null;
      throw new TftpError(ACCESS_VIOLATION, 'Access violation');
    }
    let bytes: Buffer | undefined;
    try {
      const st = fs.fstatSync(fd, { bigint: true }); // nanosecond times and exact inode numbers: the cache's key
      if (!st.isFile()) throw new TftpError(ACCESS_VIOLATION, 'Access violation: not a regular file');
      const size = Number(st.size);
      // realpath and open are two steps: check what was actually opened, in case a directory
      // was swapped for a symlink in between (Linux exposes it in /proc).
      let opened = real;
      try {
        opened = fs.readlinkSync(`/proc/self/fd/${fd}`);
      } catch {
        // no /proc: the realpath check above stands
      }
      if (!inside(base, opened)) throw new TftpError(ACCESS_VIOLATION, 'Access violation: outside root');
      const kept = cache?.get({ dev: st.dev, ino: st.ino, size, mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs }, () => readWhole(fd));
      bytes = kept && (await kept.catch(() => undefined)); // a failed read: served from the descriptor below
      // The stream closes the descriptor at its end or when the server destroys it. From offset 0: a failed
      // cache read may have moved the descriptor's position.
      if (!bytes) return { stream: fs.createReadStream('', { fd, start: 0, highWaterMark: 64 * 1024 }), size, fd };
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
    fs.closeSync(fd); // outside the try: a failed close is never retried on a number another thread may reuse
    return { stream: Readable.from([bytes]), size: bytes.length, bytes };
  };
}

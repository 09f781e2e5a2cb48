import { Readable } from 'node:stream';
import type { FileCache } from './file-cache.js';
import { fsHandler } from './fs-handler.js';
import type { TftpClient, TftpFile, TftpHandler } from './server.js';

/**
 * What a TFTP request resolves to, as plain data: it crosses from the thread that decides (inventory,
 * leases, boot windows) to the thread that serves (src/boot/tftp/worker.ts). Generated files travel as
 * bytes; image files as a name under a root, opened where they are served, with fsHandler's checks.
 */
export type Resolved = { bytes: Uint8Array } | { file: { root: string; name: string } };

/** Null for "File not found"; throws TftpError for a specific error, like a TftpHandler. */
export type TftpResolver = (path: string, client: TftpClient) => Promise<Resolved | null>;

/** Opens what a resolver named: one fsHandler per root, reused (it caches the root's realpath); image files through `cache`. */
export function resolvedOpener(cache?: FileCache): (r: Resolved, client: TftpClient) => Promise<TftpFile | null> {
  const roots = new Map<string, TftpHandler>();
  return async (r, client) => {
    if ('bytes' in r) {
      const buf = Buffer.from(r.bytes.buffer, r.bytes.byteOffset, r.bytes.byteLength);
      return { stream: Readable.from([buf]), size: buf.length, bytes: buf };
    }
    let h = roots.get(r.file.root);
    if (!h) roots.set(r.file.root, (h = fsHandler(r.file.root, cache)));
    return h(r.file.name, client);
  };
}

/** A TftpHandler from a resolver, for a server on this thread; image files through `cache`. */
export function resolverHandler(resolve: TftpResolver, cache?: FileCache): TftpHandler {
  const open = resolvedOpener(cache);
  return async (path, client) => {
    const r = await resolve(path, client);
    return r && open(r, client);
  };
}

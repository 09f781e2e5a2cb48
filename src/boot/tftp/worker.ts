/**
 * The TFTP thread's entry (src/boot/tftp/thread.ts starts it): the TftpServer runs here, so per-packet
 * work, retransmission timers and file reads never wait behind the API, consoles or a state write. Each
 * request costs the main thread one question (what does this path mean for this client?); the answer is
 * bytes or a file under a root, opened and streamed here.
 */
import { runService } from '../thread/worker.js';
import type { WireError } from '../thread/protocol.js';
import { resolvedOpener, type Resolved } from './resolved.js';
import { FileCache } from './file-cache.js';
import { TftpError, TftpServer } from './server.js';
import type { TftpThreadWorkerOptions } from './thread.js';

await runService<TftpThreadWorkerOptions>(async ({ fileCacheBytes, ...options }, ask, emit) => {
  const open = resolvedOpener(fileCacheBytes ? new FileCache({ maxBytes: fileCacheBytes }) : undefined);
  const server = new TftpServer({
    ...options,
    handler: async (path, client) => {
      const r = (await ask('resolve', path, client).catch((e: WireError) => {
        throw e.code === undefined ? new Error(e.message) : new TftpError(e.code, e.message);
      })) as Resolved | null;
      return r && open(r, client);
    },
    onTransfer: (ev) => emit('transfer', ev),
  });
  await server.start();
  return server;
});

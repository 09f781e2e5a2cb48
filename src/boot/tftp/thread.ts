import { ServiceThread, type PreloadedThread } from '../thread/host.js';
import type { TftpResolver } from './resolved.js';
import { TftpError, type TftpServerOptions, type TftpStats, type TransferEvent } from './server.js';

/** The thread's entry (a PreloadedThread of it lets src/server.ts load it early). */
export const TFTP_THREAD_ENTRY = new URL(import.meta.url.endsWith('.ts') ? './worker.ts' : './worker.js', import.meta.url);

/** What the TFTP thread is started with (data only). */
export interface TftpThreadWorkerOptions extends Omit<TftpServerOptions, 'handler' | 'onTransfer'> {
  /** Memory for whole image files (src/boot/tftp/file-cache.ts); 0 or absent: every transfer reads its file. */
  fileCacheBytes?: number;
}

export interface TftpThreadOptions extends TftpThreadWorkerOptions {
  resolve: TftpResolver;
  /** Its thread, loaded ahead (new PreloadedThread(TFTP_THREAD_ENTRY)). */
  preloaded?: PreloadedThread;
  onTransfer?: (ev: TransferEvent) => void;
}

/**
 * The TFTP server on a thread of its own (src/boot/tftp/worker.ts). Requests are resolved here, on the
 * main thread, where the inventory and the leases live; serving them happens there.
 */
export class TftpThread extends ServiceThread<TftpStats> {
  constructor({ resolve, onTransfer, preloaded, ...options }: TftpThreadOptions) {
    super(
      {
        name: 'tftp',
        entry: TFTP_THREAD_ENTRY,
        preloaded,
        options: options satisfies TftpThreadWorkerOptions,
        answers: { resolve: (path: string, client: { address: string; port: number }) => resolve(path, client) },
        events: { transfer: (ev: TransferEvent) => onTransfer?.(ev) },
        toWire: (e) => (e instanceof TftpError ? { code: e.code, message: e.message } : { message: (e as Error).message }),
      },
      { rrq: 0, malformed: 0, completed: 0, failed: 0, active: 0, refused: 0, delayed: 0, waiting: 0 },
    );
  }
}

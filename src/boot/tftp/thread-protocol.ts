import type { Resolved } from './resolved.js';
import type { TftpClient, TftpServerOptions, TftpStats, TransferEvent } from './server.js';

/** The TFTP thread's options: the server's, less what lives on the main thread. */
export type ThreadOptions = Omit<TftpServerOptions, 'handler' | 'onTransfer'>;

/** Main thread → TFTP thread. */
export type ToWorker =
  | { t: 'resolved'; id: number; r: Resolved | null }
  | { t: 'refused'; id: number; code?: number; message: string }
  | { t: 'stop' };

/** TFTP thread → main thread. */
export type FromWorker =
  | { t: 'listening'; address: { address: string; port: number } }
  | { t: 'resolve'; id: number; path: string; client: TftpClient }
  | { t: 'transfer'; ev: TransferEvent }
  | { t: 'stats'; stats: TftpStats }
  | { t: 'stopped' };

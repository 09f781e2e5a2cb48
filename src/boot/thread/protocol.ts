/** Messages between a boot service's thread and the main thread (src/boot/thread/host.ts, worker.ts). */

/** An error as it crosses threads: a protocol code (a TFTP error number) when the service has one. */
export interface WireError {
  code?: number;
  message: string;
}

/** Main thread → service thread. */
export type ToService =
  | { t: 'answer'; id: number; value?: unknown; error?: WireError }
  | { t: 'stop' }
  /** To a preloaded thread (host.ts PreloadedThread): start the service with these options. */
  | { t: 'go'; options: Record<string, unknown> };

/** Service thread → main thread. */
export type FromService =
  | { t: 'listening'; address: { address: string; port: number } }
  | { t: 'ask'; id: number; method: string; args: unknown[] }
  | { t: 'event'; name: string; payload: unknown }
  | { t: 'stats'; stats: object }
  | { t: 'stopped' };

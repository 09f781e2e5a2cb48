import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { log } from '../../log.js';
import type { TftpResolver } from './resolved.js';
import { TftpError, type TftpStats, type TransferEvent } from './server.js';
import type { FromWorker, ThreadOptions, ToWorker } from './thread-protocol.js';

const log_ = log.child({ mod: 'tftp-thread' });
const TS = import.meta.url.endsWith('.ts');
const WORKER = new URL(TS ? './worker.ts' : './worker.js', import.meta.url);
/**
 * Run from TypeScript (tsx, a test runner's transform), the worker is TypeScript too: it registers tsx's
 * loader first. Node gives a worker no loader of its parent's (`--import` in execArgv is not honoured).
 */
const workerSource = (): string | URL => {
  if (!TS) return WORKER;
  // The ESM entry of tsx/esm/api, from its package's exports (require.resolve would give the CJS one).
  const pkgJson = createRequire(import.meta.url).resolve('tsx/package.json');
  const entry = (JSON.parse(readFileSync(pkgJson, 'utf8')) as { exports: Record<string, { import: { default: string } }> }).exports['./esm/api']!.import.default;
  const tsx = pathToFileURL(join(dirname(pkgJson), entry)).href;
  return `import(${JSON.stringify(tsx)}).then((t) => { t.register(); return import(${JSON.stringify(WORKER.href)}); });`;
};
/** A crashed thread is started again after this long (doubling, capped), so boards keep booting. */
const RESTART_MS = [200, 1000, 5000];

export interface TftpThreadOptions extends ThreadOptions {
  resolve: TftpResolver;
  onTransfer?: (ev: TransferEvent) => void;
}

/**
 * The TFTP server on a thread of its own (src/boot/tftp/worker.ts), with the interface of TftpServer that
 * the rest of the server uses: start, stop, address, stats. Requests are resolved here, on the main
 * thread, where the inventory and the leases live; serving them happens there.
 */
export class TftpThread {
  stats: TftpStats = { rrq: 0, malformed: 0, completed: 0, failed: 0, active: 0, refused: 0, delayed: 0, waiting: 0 };
  /** Times the thread died and was started again. */
  restarts = 0;
  private worker: Worker | undefined;
  private bound: { address: string; port: number } | undefined;
  private stopping = false;
  private restartTimer: NodeJS.Timeout | undefined;

  constructor(private readonly o: TftpThreadOptions) {}

  async start(): Promise<void> {
    await this.spawn(this.o.port);
  }

  address(): { address: string; port: number } {
    if (!this.bound) throw new Error('tftp server not started');
    return this.bound;
  }

  /** The running thread, for tests that kill it. */
  get thread(): Worker | undefined {
    return this.worker;
  }

  private spawn(port: number): Promise<void> {
    const { resolve: _r, onTransfer: _t, ...opts } = this.o;
    const src = workerSource();
    const w = new Worker(src, { workerData: { ...opts, port }, eval: typeof src === 'string' });
    this.worker = w;
    return new Promise((resolve, reject) => {
      let listening = false;
      w.on('message', (m: FromWorker) => {
        if (m.t === 'listening') {
          listening = true;
          this.bound = m.address;
          resolve();
        } else if (m.t === 'resolve') void this.answer(w, m.id, m.path, m.client);
        else if (m.t === 'transfer') this.o.onTransfer?.(m.ev);
        else if (m.t === 'stats') this.stats = m.stats;
      });
      w.on('error', (err) => {
        if (!listening) return reject(new Error(`tftp: the TFTP thread did not start: ${err.message}`, { cause: err }));
        log_.error({ err }, 'the TFTP thread failed');
      });
      w.on('exit', (code) => {
        if (this.worker !== w) return;
        this.worker = undefined;
        if (!listening) return reject(new Error(`tftp: the TFTP thread exited (${code}) before listening`));
        if (this.stopping) return;
        // Transfers in flight are lost; their clients retransmit their RRQ to the new thread.
        const delay = RESTART_MS[Math.min(this.restarts, RESTART_MS.length - 1)]!;
        this.restarts++;
        log_.error({ code, restartInMs: delay }, 'the TFTP thread exited; starting it again');
        this.restartTimer = setTimeout(() => {
          this.restartTimer = undefined;
          this.spawn(this.bound!.port).catch((err) => log_.error({ err }, 'the TFTP thread could not be started again'));
        }, delay);
      });
    });
  }

  private async answer(w: Worker, id: number, path: string, client: { address: string; port: number }): Promise<void> {
    let m: ToWorker;
    try {
      m = { t: 'resolved', id, r: await this.o.resolve(path, client) };
    } catch (e) {
      m = e instanceof TftpError ? { t: 'refused', id, code: e.code, message: e.message } : { t: 'refused', id, message: (e as Error).message };
    }
    if (this.worker === w) w.postMessage(m);
  }

  async stop(): Promise<void> {
    this.stopping = true;
    clearTimeout(this.restartTimer);
    const w = this.worker;
    if (!w) return;
    const exited = new Promise<void>((r) => w.once('exit', () => r()));
    const stopped = new Promise<void>((r) => w.on('message', (m: FromWorker) => m.t === 'stopped' && r()));
    w.postMessage({ t: 'stop' } satisfies ToWorker);
    let timer: NodeJS.Timeout | undefined;
    // TftpServer.stop waits up to 2 s for transfers; past 5 s the thread is ended.
    await Promise.race([stopped, new Promise((r) => (timer = setTimeout(r, 5000)))]);
    clearTimeout(timer);
    await w.terminate();
    await exited;
  }
}

import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { log } from '../../log.js';
import type { FromService, ToService, WireError } from './protocol.js';

/** A crashed thread is started again after this long (growing, capped), so boards keep booting. */
const RESTART_MS = [200, 1000, 5000];

/**
 * Run from TypeScript (tsx, a test runner's transform), a worker entry is TypeScript too: it registers
 * tsx's loader first. Node gives a worker no loader of its parent's (`--import` in execArgv is not honoured).
 */
function workerSource(entry: URL): string | URL {
  if (!entry.pathname.endsWith('.ts')) return entry;
  // The ESM entry of tsx/esm/api, from its package's exports (require.resolve would give the CJS one).
  const pkgJson = createRequire(import.meta.url).resolve('tsx/package.json');
  const api = (JSON.parse(readFileSync(pkgJson, 'utf8')) as { exports: Record<string, { import: { default: string } }> }).exports['./esm/api']!.import.default;
  const tsx = pathToFileURL(join(dirname(pkgJson), api)).href;
  return `import(${JSON.stringify(tsx)}).then((t) => { t.register(); return import(${JSON.stringify(entry.href)}); });`;
}

/**
 * A service thread started ahead of its service: the worker loads its modules (~150 ms each under tsx,
 * more on a busy start) while the server does the rest of its start-up, and then waits for its options
 * (ServiceThread takes it over at start). Until then it answers nothing and binds nothing.
 */
export class PreloadedThread {
  readonly worker: Worker;
  /** Set when it died before it was taken over: the service then starts a fresh thread. */
  ended: Error | undefined;
  private takenOver = false;

  constructor(readonly entry: URL) {
    const src = workerSource(entry);
    this.worker = new Worker(src, { workerData: { hold: true }, eval: typeof src === 'string' });
    this.worker.unref(); // held, it must not keep a process alive that forgot it (ServiceThread refs it back)
    // Until takeover nothing else listens: an error here must not be an unhandled 'error' event.
    this.worker.on('error', (err) => (this.ended ??= err));
    this.worker.on('exit', (code) => (this.ended ??= new Error(`exited (${code}) before its start`)));
  }

  /** The worker, once, for ServiceThread; undefined when it died or was taken already. */
  take(): Worker | undefined {
    if (this.takenOver || this.ended) return undefined;
    this.takenOver = true;
    this.worker.ref();
    return this.worker;
  }

  /** Ends a thread never taken over (a start that failed before the boot services). */
  async dispose(): Promise<void> {
    if (this.takenOver) return;
    this.takenOver = true;
    await this.worker.terminate();
  }
}

export interface ServiceThreadOptions {
  /** For logs and errors: "tftp", "dhcp". */
  name: string;
  /** The worker entry (src/boot/<service>/worker.ts), which calls runService (src/boot/thread/worker.ts). */
  entry: URL;
  /** The service's options; `port` is replaced by the bound one when the thread is started again. */
  options: { port?: number } & Record<string, unknown>;
  /** What the thread may ask the main thread; a thrown error crosses as a WireError (`toWire`). */
  answers: Record<string, (...args: any[]) => Promise<unknown>>;
  /** Events from the thread. */
  events?: Record<string, (payload: any) => void>;
  toWire?: (err: unknown) => WireError;
  /** A thread loaded ahead (PreloadedThread) for the first start; its entry must be `entry`. */
  preloaded?: PreloadedThread;
}

/**
 * A boot service (TFTP, DHCP) on a thread of its own, with the surface the rest of the server uses:
 * start, stop, address, stats. Only what needs the inventory and the leases runs here, as answers to
 * the thread's questions; packets, timers and file reads stay on the thread. A thread that dies is
 * started again on the same port (clients retransmit).
 */
export class ServiceThread<S extends object> {
  /** The thread's last stats (sent when they change, every 500 ms at most). */
  stats: S;
  /** Times the thread died and was started again. */
  restarts = 0;
  private worker: Worker | undefined;
  private bound: { address: string; port: number } | undefined;
  private stopping = false;
  private restartTimer: NodeJS.Timeout | undefined;
  private readonly log;

  constructor(
    private readonly o: ServiceThreadOptions,
    initialStats: S,
  ) {
    this.stats = initialStats;
    this.log = log.child({ mod: `${o.name}-thread` });
  }

  start(): Promise<void> {
    return this.spawn(this.o.options.port);
  }

  address(): { address: string; port: number } {
    if (!this.bound) throw new Error(`${this.o.name} server not started`);
    return this.bound;
  }

  /** The running thread, for tests that kill it. */
  get thread(): Worker | undefined {
    return this.worker;
  }

  private spawn(port: number | undefined): Promise<void> {
    const options = { ...this.o.options, port };
    const preloaded = this.o.preloaded?.entry.href === this.o.entry.href ? this.o.preloaded.take() : undefined;
    const src = workerSource(this.o.entry);
    const w = preloaded ?? new Worker(src, { workerData: options, eval: typeof src === 'string' });
    if (preloaded) w.postMessage({ t: 'go', options } satisfies ToService);
    this.worker = w;
    return new Promise((resolve, reject) => {
      let listening = false;
      w.on('message', (m: FromService) => {
        if (m.t === 'listening') {
          listening = true;
          this.bound = m.address;
          resolve();
        } else if (m.t === 'ask') void this.answer(w, m.id, m.method, m.args);
        else if (m.t === 'event') this.o.events?.[m.name]?.(m.payload);
        else if (m.t === 'stats') this.stats = m.stats as S;
      });
      w.on('error', (err) => {
        if (!listening) return reject(new Error(`${this.o.name}: its thread did not start: ${err.message}`, { cause: err }));
        this.log.error({ err }, `the ${this.o.name} thread failed`);
      });
      w.on('exit', (code) => {
        if (this.worker !== w) return;
        this.worker = undefined;
        if (!listening) return reject(new Error(`${this.o.name}: its thread exited (${code}) before listening`));
        if (this.stopping) return;
        const delay = RESTART_MS[Math.min(this.restarts, RESTART_MS.length - 1)]!;
        this.restarts++;
        this.log.error({ code, restartInMs: delay }, `the ${this.o.name} thread exited; starting it again`);
        this.restartTimer = setTimeout(() => {
          this.restartTimer = undefined;
          this.spawn(this.bound!.port).catch((err) => this.log.error({ err }, `the ${this.o.name} thread could not be started again`));
        }, delay);
      });
    });
  }

  private async answer(w: Worker, id: number, method: string, args: unknown[]): Promise<void> {
    let m: ToService;
    try {
      const fn = this.o.answers[method];
      if (!fn) throw new Error(`${this.o.name} thread asked for ${method}, which the main thread does not answer`);
      m = { t: 'answer', id, value: await fn(...args) };
    } catch (e) {
      m = { t: 'answer', id, error: this.o.toWire?.(e) ?? { message: (e as Error).message } };
    }
    if (this.worker === w) w.postMessage(m);
  }

  async stop(): Promise<void> {
    this.stopping = true;
    clearTimeout(this.restartTimer);
    const w = this.worker;
    if (!w) return;
    const exited = new Promise<void>((r) => w.once('exit', () => r()));
    const stopped = new Promise<void>((r) => w.on('message', (m: FromService) => m.t === 'stopped' && r()));
    w.postMessage({ t: 'stop' } satisfies ToService);
    let timer: NodeJS.Timeout | undefined;
    // The service's own stop waits for its transfers (TFTP: up to 2 s); past 5 s the thread is ended.
    await Promise.race([stopped, new Promise((r) => (timer = setTimeout(r, 5000)))]);
    clearTimeout(timer);
    await w.terminate();
    await exited;
  }
}

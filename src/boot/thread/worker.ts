import { parentPort, workerData } from 'node:worker_threads';
import type { FromService, ToService, WireError } from './protocol.js';

/** What a service thread's entry gives runService: a started server. */
export interface ThreadService {
  address(): { address: string; port: number };
  stop(): Promise<void>;
  readonly stats: object;
}

/** A question to the main thread: resolves with its answer, rejects with the WireError it sent. */
export type Ask = (method: string, ...args: unknown[]) => Promise<unknown>;
export type Emit = (name: string, payload: unknown) => void;

/**
 * The service-thread side (the main side is src/boot/thread/host.ts): starts the service with the
 * thread's options, relays its questions and events, sends its stats when they change (every 500 ms
 * at most), and stops it when asked.
 */
export async function runService<O>(start: (options: O, ask: Ask, emit: Emit) => Promise<ThreadService>): Promise<void> {
  const port = parentPort!;
  const send = (m: FromService) => port.postMessage(m);
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: WireError) => void }>();
  let nextId = 1;
  const ask: Ask = (method, ...args) =>
    new Promise((resolve, reject) => {
      const id = nextId++;
      pending.set(id, { resolve, reject });
      send({ t: 'ask', id, method, args });
    });
  // A preloaded thread (host.ts preloadThread) has loaded its modules and waits for its options: the
  // main thread sends them once what the service asks about (inventory, leases) is ready.
  let options = workerData as O;
  if ((workerData as { hold?: boolean } | undefined)?.hold) {
    const first = await new Promise<ToService>((resolve) => port.once('message', resolve));
    if (first.t !== 'go') {
      send({ t: 'stopped' });
      port.close();
      return;
    }
    options = first.options as O;
  }
  const service = await start(options, ask, (name, payload) => send({ t: 'event', name, payload }));

  let lastStats = '';
  const sendStats = () => {
    const s = JSON.stringify(service.stats);
    if (s !== lastStats) send({ t: 'stats', stats: JSON.parse((lastStats = s)) });
  };
  const statsTimer = setInterval(sendStats, 500);
  port.on('message', async (m: ToService) => {
    if (m.t === 'stop') {
      clearInterval(statsTimer);
      await service.stop();
      for (const p of pending.values()) p.reject({ message: 'service thread stopping' });
      sendStats();
      send({ t: 'stopped' });
      port.close();
      return;
    }
    if (m.t !== 'answer') return; // a second 'go': the service runs already
    const p = pending.get(m.id);
    if (!p) return;
    pending.delete(m.id);
    if (m.error) p.reject(m.error);
    else p.resolve(m.value);
  });
  send({ t: 'listening', address: service.address() });
}

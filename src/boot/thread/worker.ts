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
  // One handler from the first moment: a 'stop' that comes before 'go', or while the service starts, is
  // kept and carried out once it can be (not left to the port's queue and stop()'s 5-s fallback).
  let service: ThreadService | undefined;
  let statsTimer: NodeJS.Timeout | undefined;
  let lastStats = '';
  const sendStats = () => {
    const s = JSON.stringify(service!.stats);
    if (s !== lastStats) send({ t: 'stats', stats: JSON.parse((lastStats = s)) });
  };
  let stopAsked = false;
  let stopped: Promise<void> | undefined;
  const stop = () =>
    (stopped ??= (async () => {
      clearInterval(statsTimer);
      await service?.stop();
      for (const p of pending.values()) p.reject({ message: 'service thread stopping' });
      if (service) sendStats();
      send({ t: 'stopped' });
      port.close();
    })());
  let go: (options: O | undefined) => void = () => {};
  const options = new Promise<O | undefined>((resolve) => (go = resolve));
  port.on('message', (m: ToService) => {
    if (m.t === 'go') return go(m.options as O);
    if (m.t === 'stop') {
      stopAsked = true;
      go(undefined); // held: never start
      if (service) void stop();
      return;
    }
    const p = pending.get(m.id);
    if (!p) return;
    pending.delete(m.id);
    if (m.error) p.reject(m.error);
    else p.resolve(m.value);
  });
  // A preloaded thread (host.ts PreloadedThread) has loaded its modules and waits for its options: the
  // main thread sends them once what the service asks about (inventory, leases) is ready.
  const held = (workerData as { hold?: boolean } | undefined)?.hold;
  const o = held ? await options : (workerData as O);
  if (o === undefined || stopAsked) return void (await stop());
  service = await start(o, ask, (name, payload) => send({ t: 'event', name, payload }));
  if (stopAsked) return void (await stop());
  statsTimer = setInterval(sendStats, 500);
  send({ t: 'listening', address: service.address() });
}

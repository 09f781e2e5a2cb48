import type { Command } from 'commander';
import type { BoardEvent } from '../inventory/events.js';
import { ApiError, client, common, type ApiClient, type Common } from './context.js';

/** Polling bounds for --follow: never busier than 5 a second, never slower than every 30 s. */
export const FOLLOW_INTERVAL = { defaultS: 1, minS: 0.2, maxS: 30 };

/** One event as one line: `time  type      message  {details}`. */
export function eventLine(e: BoardEvent): string {
  return `${e.time}  ${e.type.padEnd(8)}  ${e.message}${e.details && Object.keys(e.details).length ? `  ${JSON.stringify(e.details)}` : ''}`;
}

/**
 * What `next` holds that `prev` did not. A board's event list only grows at its end and loses its
 * oldest entries (at most 200 are kept), so `next` starts with a tail of `prev`: find the longest one.
 * When none matches (the list was forgotten and started again), everything newer than the last seen.
 */
export function newEvents(prev: BoardEvent[], next: BoardEvent[]): BoardEvent[] {
  if (!prev.length) return next;
  const key = (e: BoardEvent) => JSON.stringify(e);
  const p = prev.map(key);
  const n = next.map(key);
  for (let start = 0; start < p.length; start++) {
    const tail = p.length - start;
    if (tail > n.length) continue;
    let same = true;
    for (let i = 0; i < tail && same; i++) same = p[start + i] === n[i];
    if (same) return next.slice(tail);
  }
  const last = prev[prev.length - 1]!.time;
  return next.filter((e) => e.time > last);
}

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => (clearTimeout(t), resolve()), { once: true });
  });

/**
 * Print a board's events, then new ones as they come, until `signal` aborts. The API's event stream
 * (GET /v1/events) carries jobs and leases but not boards' boot events, so this polls
 * GET /v1/boards/:id/events. A server that cannot be reached is retried; an API error ends it.
 */
export async function followBoardEvents(api: ApiClient, boardId: string, o: { intervalMs: number; signal: AbortSignal; emit: (e: BoardEvent) => void; warn: (s: string) => void }): Promise<void> {
  let seen: BoardEvent[] = await api.call('GET', `/boards/${encodeURIComponent(boardId)}/events`);
  seen.forEach(o.emit);
  let unreachable = false;
  while (!o.signal.aborted) {
    await sleep(o.intervalMs, o.signal);
    if (o.signal.aborted) return;
    let now: BoardEvent[];
    try {
      now = await api.call('GET', `/boards/${encodeURIComponent(boardId)}/events`);
    } catch (err) {
      if (err instanceof ApiError) throw err;
      if (!unreachable) o.warn(`${(err as Error).message}; still trying`);
      unreachable = true;
      continue;
    }
    if (unreachable) o.warn('reconnected');
    unreachable = false;
    newEvents(seen, now).forEach(o.emit);
    seen = now;
  }
}

export function boardEventsCommand(boards: Command): void {
  common(boards.command('events <id>').description("a board's recent events (DHCP, files fetched, power, state changes, errors); --follow for new ones until Ctrl-C"))
    .option('-f, --follow', 'keep printing new events until interrupted')
    .option('--interval <seconds>', `how often --follow asks (${FOLLOW_INTERVAL.minS}–${FOLLOW_INTERVAL.maxS})`, String(FOLLOW_INTERVAL.defaultS))
    .action(async (id: string, o: Common & { follow?: boolean; interval: string }) => {
      const api = await client(o);
      if (!o.follow) {
        const list: BoardEvent[] = await api.call('GET', `/boards/${encodeURIComponent(id)}/events`);
        if (o.json) console.log(JSON.stringify(list, null, 2));
        else if (!list.length) console.log(`(no events for board ${id})`);
        else list.forEach((e) => console.log(eventLine(e)));
        return;
      }
      const s = Number(o.interval);
      if (!Number.isFinite(s) || s < FOLLOW_INTERVAL.minS || s > FOLLOW_INTERVAL.maxS) {
        throw new Error(`--interval must be between ${FOLLOW_INTERVAL.minS} and ${FOLLOW_INTERVAL.maxS} seconds, not ${o.interval}`);
      }
      const ctl = new AbortController();
      const stop = () => ctl.abort();
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      if (!o.json) console.error(`following board ${id} (Ctrl-C to stop)`);
      await followBoardEvents(api, id, {
        intervalMs: s * 1000,
        signal: ctl.signal,
        // --json while following: one JSON document per line (NDJSON), as each event comes
        emit: (e) => console.log(o.json ? JSON.stringify(e) : eventLine(e)),
        warn: (w) => console.error(`dozen: ${w}`),
      });
    });
}

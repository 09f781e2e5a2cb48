import { log } from '../../log.js';
import { ServiceThread, type PreloadedThread } from '../thread/host.js';
import type { DhcpEvent, DhcpLookup, DhcpRequestInfo, DhcpReservation, DhcpServerOptions, DhcpStats } from './server.js';

/** The thread's entry (a PreloadedThread of it lets src/server.ts load it early). */
export const DHCP_THREAD_ENTRY = new URL(import.meta.url.endsWith('.ts') ? './worker.ts' : './worker.js', import.meta.url);

/** What the DHCP thread is started with: the server's options as data (functions stay here). */
export type DhcpThreadWorkerOptions = Omit<DhcpServerOptions, 'lookup' | 'onEvent' | 'pinned'> & {
  /** `<mac>/<ip>` of the clients the controller holds a permanent neighbour entry for (answered by unicast). */
  pinned: string[];
};

export interface DhcpThreadOptions extends Omit<DhcpServerOptions, 'pinned'> {
  pinned?: string[];
  /** Its thread, loaded ahead (new PreloadedThread(DHCP_THREAD_ENTRY)). */
  preloaded?: PreloadedThread;
}

/** One lookup's outcome as it crosses back to the thread: each request of a batch fails or succeeds alone. */
export type LookupAnswer = { value: DhcpReservation | null } | { error: string };

const failed = (err: unknown): LookupAnswer => ({ error: err instanceof Error ? err.message : String(err) });

/** One lookup's outcome, never a rejection (nor a throw, even from a lookup that is not async). */
function settle(lookup: DhcpLookup, info: DhcpRequestInfo): Promise<LookupAnswer> {
  try {
    return lookup(info).then((value): LookupAnswer => ({ value }), failed);
  } catch (err) {
    return Promise.resolve(failed(err));
  }
}

/**
 * Answers the thread's batches of lookups, each lookup as before (same calls, same order), a batch after
 * the one before it and the first of a batch alone: a lookup can miss a cache (the image catalog rescans
 * its disk every few seconds), and a hundred lookups started together would each start the same rescan.
 * A batch that hangs (a stuck disk) holds the next one up `maxWaitMs` at most.
 */
export class LookupBatches {
  private last: Promise<unknown> = Promise.resolve();
  private unanswered = 0;

  constructor(
    private readonly lookup: DhcpLookup,
    private readonly maxWaitMs = 1000,
  ) {}

  answer(infos: DhcpRequestInfo[]): Promise<LookupAnswer[]> {
    // Only a batch still running is waited for (no timer per batch when lookups keep up).
    const run = this.unanswered ? waitAtMost(this.last, this.maxWaitMs).then(() => this.answerNow(infos)) : this.answerNow(infos);
    this.unanswered++;
    const done = run.finally(() => this.unanswered--);
    this.last = done.catch(() => {});
    return done;
  }

  private async answerNow(infos: DhcpRequestInfo[]): Promise<LookupAnswer[]> {
    if (!infos.length) return [];
    const first = await settle(this.lookup, infos[0]!);
    const rest = await Promise.all(infos.slice(1).map((info) => settle(this.lookup, info)));
    return [first, ...rest];
  }
}

function waitAtMost(p: Promise<unknown>, ms: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    void p.then(() => (clearTimeout(timer), resolve()));
  });
}

/** A batch of events, each handed on alone: one listener's throw must not drop the rest of the batch. */
function deliverEvents(onEvent: ((ev: DhcpEvent) => void) | undefined, events: DhcpEvent[]): void {
  if (!onEvent) return;
  for (const ev of events) {
    try {
      onEvent(ev);
    } catch (err) {
      log.warn({ err }, 'dhcp: onEvent handler threw');
    }
  }
}

/**
 * The DHCP server on a thread of its own (src/boot/dhcp/worker.ts): a storm's packets are decoded,
 * checked and answered there; here, only the reservation lookup (inventory, leases) and the events.
 * Both cross in batches (one message per burst of packets the thread handled, see worker.ts): a
 * message per packet cost more than answering it.
 */
export class DhcpThread extends ServiceThread<DhcpStats> {
  constructor({ lookup, onEvent, pinned, preloaded, ...options }: DhcpThreadOptions) {
    const batches = new LookupBatches(lookup);
    super(
      {
        name: 'dhcp',
        entry: DHCP_THREAD_ENTRY,
        preloaded,
        options: { ...options, pinned: pinned ?? [] } satisfies DhcpThreadWorkerOptions,
        answers: {
          // The events that were ready when the thread asked come along: handed on before the lookups are answered.
          lookups: (infos: DhcpRequestInfo[], events: DhcpEvent[]) => (deliverEvents(onEvent, events), batches.answer(infos)),
        },
        events: { dhcp: (events: DhcpEvent[]) => deliverEvents(onEvent, events) },
      },
      { received: 0, malformed: 0, offers: 0, acks: 0, naks: 0, ignored: 0 },
    );
  }
}

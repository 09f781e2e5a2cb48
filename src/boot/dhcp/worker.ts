/**
 * The DHCP thread's entry (src/boot/dhcp/thread.ts starts it): packets are received, decoded, checked,
 * answered and encoded here; the main thread answers one question per request (the reservation for a
 * MAC) and hears the events. Questions and events cross in batches: those of one turn of this thread's
 * event loop (the packets one poll read, the answers that came back) go as one message once the turn is
 * done. Under load a turn handles many packets, so the cost of a message (a clone, a wake-up of the
 * other thread) is shared; a packet alone waits for nothing but the end of its own turn.
 */
import { runService, type Ask, type Emit } from '../thread/worker.js';
import { DhcpServer, type DhcpEvent, type DhcpRequestInfo, type DhcpReservation, type DhcpServerOptions } from './server.js';
import type { DhcpThreadWorkerOptions, LookupAnswer } from './thread.js';

interface PendingLookup {
  info: DhcpRequestInfo;
  resolve: (r: DhcpReservation | null) => void;
  reject: (err: Error) => void;
}

/** This turn's lookups and events, sent together when the turn ends: the events ride along with the questions. */
class Outbox {
  private lookups: PendingLookup[] = [];
  private events: DhcpEvent[] = [];
  private scheduled = false;

  constructor(
    private readonly ask: Ask,
    private readonly emit: Emit,
  ) {}

  /** lookup() for the server. */
  readonly lookup = (info: DhcpRequestInfo): Promise<DhcpReservation | null> =>
    new Promise((resolve, reject) => {
      this.lookups.push({ info, resolve, reject });
      this.schedule();
    });

  /** onEvent() for the server. */
  readonly event = (ev: DhcpEvent): void => {
    this.events.push(ev);
    this.schedule();
  };

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(this.flush);
  }

  private readonly flush = (): void => {
    const { lookups, events } = this;
    this.lookups = [];
    this.events = [];
    this.scheduled = false;
    if (!lookups.length) return this.emit('dhcp', events);
    this.ask('lookups', lookups.map((p) => p.info), events).then(
      (answers) => (answers as LookupAnswer[]).forEach((a, i) => ('error' in a ? lookups[i]!.reject(new Error(a.error)) : lookups[i]!.resolve(a.value))),
      (err: { message: string }) => lookups.forEach((p) => p.reject(new Error(err.message))),
    );
  };
}

await runService<DhcpThreadWorkerOptions>(async ({ pinned, ...options }, ask, emit) => {
  const pins = new Set(pinned);
  const outbox = new Outbox(ask, emit);
  const server = new DhcpServer({
    ...(options as Omit<DhcpServerOptions, 'lookup' | 'onEvent' | 'pinned'>),
    lookup: outbox.lookup,
    onEvent: outbox.event,
    pinned: (mac, ip) => pins.has(`${mac}/${ip}`),
  });
  await server.start();
  return server;
});

import { ServiceThread } from '../thread/host.js';
import type { DhcpEvent, DhcpLookup, DhcpServerOptions, DhcpStats } from './server.js';

/** What the DHCP thread is started with: the server's options as data (functions stay here). */
export type DhcpThreadWorkerOptions = Omit<DhcpServerOptions, 'lookup' | 'onEvent' | 'pinned'> & {
  /** `<mac>/<ip>` of the clients the controller holds a permanent neighbour entry for (answered by unicast). */
  pinned: string[];
};

export interface DhcpThreadOptions extends Omit<DhcpServerOptions, 'pinned'> {
  pinned?: string[];
}

/**
 * The DHCP server on a thread of its own (src/boot/dhcp/worker.ts): a storm's packets are decoded,
 * checked and answered there; here, only the reservation lookup (inventory, leases) and the events.
 */
export class DhcpThread extends ServiceThread<DhcpStats> {
  constructor({ lookup, onEvent, pinned, ...options }: DhcpThreadOptions) {
    super(
      {
        name: 'dhcp',
        entry: new URL(import.meta.url.endsWith('.ts') ? './worker.ts' : './worker.js', import.meta.url),
        options: { ...options, pinned: pinned ?? [] } satisfies DhcpThreadWorkerOptions,
        answers: { lookup: (info: Parameters<DhcpLookup>[0]) => lookup(info) },
        events: { dhcp: (ev: DhcpEvent) => onEvent?.(ev) },
      },
      { received: 0, malformed: 0, offers: 0, acks: 0, naks: 0, ignored: 0 },
    );
  }
}

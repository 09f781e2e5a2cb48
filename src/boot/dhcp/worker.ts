/**
 * The DHCP thread's entry (src/boot/dhcp/thread.ts starts it): packets are received, decoded, checked,
 * answered and encoded here; the main thread answers one question per request (the reservation for a
 * MAC) and hears the events.
 */
import { runService } from '../thread/worker.js';
import { DhcpServer, type DhcpReservation, type DhcpServerOptions } from './server.js';
import type { DhcpThreadWorkerOptions } from './thread.js';

await runService<DhcpThreadWorkerOptions>(async ({ pinned, ...options }, ask, emit) => {
  const pins = new Set(pinned);
  const server = new DhcpServer({
    ...(options as Omit<DhcpServerOptions, 'lookup' | 'onEvent' | 'pinned'>),
    lookup: async (info) => (await ask('lookup', info)) as DhcpReservation | null,
    onEvent: (ev) => emit('dhcp', ev),
    pinned: (mac, ip) => pins.has(`${mac}/${ip}`),
  });
  await server.start();
  return server;
});

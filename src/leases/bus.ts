import { EventEmitter } from 'node:events';

/** What the SSE stream carries. tenantId decides who may see it (null: admins only). */
export interface BusEvent {
  type: 'job' | 'lease' | 'board';
  tenantId: string | null;
  data: unknown;
}

/** In-process event bus: jobs and leases publish, the SSE endpoint and job waiters subscribe. */
export class Bus {
  private readonly ee = new EventEmitter().setMaxListeners(0);
  publish(ev: BusEvent): void {
    this.ee.emit('event', ev);
  }
  subscribe(fn: (ev: BusEvent) => void): () => void {
    this.ee.on('event', fn);
    return () => this.ee.off('event', fn);
  }
}

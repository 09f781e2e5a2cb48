import { createHash } from 'node:crypto';
import type { Job, Lease } from '../store/schema.js';
import type { BusEvent } from '../leases/bus.js';
import type { Principal } from './tokens.js';

/**
 * What a tenant may read of the server's own failures: a short message and an id, never the detail
 * (command lines, host paths, an operator's power command). The admin sees the whole record, and the
 * server's log carries the id beside the detail (`errorId` in "job step failed"), so a tenant's report
 * can be matched.
 */
export function errorId(detail: string): string {
  return createHash('sha256').update(detail).digest('hex').slice(0, 8);
}

const short = (what: string, detail: string) =>
  // A cancelled job says so: who cancelled it is no secret, and "failed" would send the tenant to the operator.
  /(^|: )cancelled: /.test(detail) ? `${what} cancelled` : `${what} failed (error ${errorId(detail)}; the operator has the detail)`;

export function tenantJob(job: Job): Job {
  const j = structuredClone(job);
  for (const st of j.steps) if (st.error) st.error = short(st.name, st.error);
  if (j.error) j.error = short(j.error.split(':')[0]!.trim() || j.kind, j.error);
  return j;
}

/** A lease as its tenant sees it: no disk path, no secret, failure reasons as short messages. */
export function tenantLease(lease: Lease): Lease {
  const l = structuredClone(lease);
  if (l.iscsi) l.iscsi = { ...l.iscsi, disk: '(server)', chapSecret: '(hidden)', ...(l.iscsi.targetSecret ? { targetSecret: '(hidden)' } : {}) };
  if (l.stateReason && l.state === 'error') l.stateReason = short(l.stateReason.split(':')[0]!.trim(), l.stateReason);
  return l;
}

export function forPrincipal<T extends Job | Lease>(p: Principal, kind: 'job' | 'lease', x: T): T {
  if (p.role === 'admin') return x;
  return (kind === 'job' ? tenantJob(x as Job) : tenantLease(x as Lease)) as T;
}

/** An SSE event as this caller may read it. */
export function eventFor(p: Principal, ev: BusEvent): unknown {
  if (p.role === 'admin') return ev.data;
  if (ev.type === 'job') return tenantJob(ev.data as Job);
  if (ev.type === 'lease') return tenantLease(ev.data as Lease);
  return ev.data;
}

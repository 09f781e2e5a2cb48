import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { DhcpEvent } from '../boot/dhcp/server.js';
import type { TransferEvent } from '../boot/tftp/server.js';
import type { BusEvent } from '../leases/bus.js';
import { BOARD_STATES, LEASE_STATES, type Job, type Lease } from '../store/schema.js';

/** What the gauges read when Prometheus scrapes: the server's own state, never a copy of it. */
export interface MetricSources {
  leases(): readonly Lease[];
  boardStates(): readonly string[];
  /** Viewers attached to consoles now (WebSocket, SSH gateway). */
  consoleViewers(): number;
  /** Docker engines in the container pool (configured, and shared boards' once registered), with their health. */
  engines?(): ReadonlyArray<{ id: string; health: string; markedDown: boolean }>;
  /** Shared boards and their engine's state (src/shared-boards: provisioning, waiting, ready, down, failed, none). */
  sharedBoards?(): ReadonlyArray<{ engine: string }>;
}

export interface Metrics {
  registry: Registry;
  onDhcpEvent(ev: DhcpEvent): void;
  onTransfer(ev: TransferEvent): void;
  onBus(ev: BusEvent): void;
}

/** Live leases hold an iSCSI target until their release has run. */
const HOLDS_TARGET = new Set<string>(['provisioning', 'active', 'reimaging', 'releasing', 'error']);

/**
 * The server's Prometheus metrics. Counters and histograms are fed by the boot servers' events and the
 * job bus as they happen; gauges (leases, boards, targets, containers, viewers) are computed at scrape
 * time from `sources`, so they can never drift from the state.
 */
export function createMetrics(sources: MetricSources): Metrics {
  const registry = new Registry();
  const dhcpReplies = new Counter({ name: 'dozen_dhcp_replies_total', help: 'DHCP replies sent, by message type', labelNames: ['type'], registers: [registry] });
  const dhcpIgnored = new Counter({ name: 'dozen_dhcp_ignored_total', help: 'DHCP requests not answered, by reason', labelNames: ['reason'], registers: [registry] });
  const tftpTransfers = new Counter({ name: 'dozen_tftp_transfers_total', help: 'TFTP transfers finished, by result', labelNames: ['result'], registers: [registry] });
  const tftpBytes = new Counter({ name: 'dozen_tftp_bytes_total', help: 'TFTP payload bytes acknowledged by clients', registers: [registry] });
  const tftpErrors = new Counter({ name: 'dozen_tftp_errors_total', help: 'TFTP transfers that failed, by error', labelNames: ['error'], registers: [registry] });
  const tftpSeconds = new Histogram({ name: 'dozen_tftp_transfer_seconds', help: 'TFTP transfer duration', buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60], registers: [registry] });
  const jobSteps = new Histogram({ name: 'dozen_job_step_seconds', help: 'Job step duration, by job kind, step and outcome', labelNames: ['kind', 'step', 'outcome'], buckets: [0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600], registers: [registry] });
  const jobs = new Counter({ name: 'dozen_jobs_total', help: 'Jobs finished, by kind and outcome', labelNames: ['kind', 'outcome'], registers: [registry] });

  new Gauge({
    name: 'dozen_leases', help: 'Leases in the state file, by kind and state', labelNames: ['kind', 'state'], registers: [registry],
    collect() {
      this.reset();
      for (const kind of ['board', 'container']) for (const state of LEASE_STATES) this.set({ kind, state }, 0);
      for (const l of sources.leases()) this.inc({ kind: l.kind, state: l.state });
    },
  });
  new Gauge({
    name: 'dozen_boards', help: 'Enrolled boards, by state', labelNames: ['state'], registers: [registry],
    collect() {
      this.reset();
      for (const state of BOARD_STATES) this.set({ state }, 0);
      for (const s of sources.boardStates()) this.inc({ state: s });
    },
  });
  new Gauge({
    name: 'dozen_iscsi_targets', help: 'iSCSI targets held by live board leases', registers: [registry],
    collect() {
      this.set(sources.leases().filter((l) => l.iscsi && HOLDS_TARGET.has(l.state)).length);
    },
  });
  new Gauge({
    name: 'dozen_containers', help: 'Live container leases, by Docker host', labelNames: ['host'], registers: [registry],
    collect() {
      this.reset();
      for (const l of sources.leases()) if (l.container && l.state !== 'released') this.inc({ host: l.container.hostId });
    },
  });
  new Gauge({
    name: 'dozen_container_engines', help: 'Docker engines in the container pool (1 each), by engine and health (up, down, unknown, drained: marked down)', labelNames: ['engine', 'health'], registers: [registry],
    collect() {
      this.reset();
      for (const e of sources.engines?.() ?? []) this.set({ engine: e.id, health: e.markedDown ? 'drained' : e.health }, 1);
    },
  });
  new Gauge({
    name: 'dozen_shared_boards', help: "Shared boards, by their engine's state", labelNames: ['engine'], registers: [registry],
    collect() {
      this.reset();
      for (const engine of ['provisioning', 'waiting', 'ready', 'down', 'failed', 'none']) this.set({ engine }, 0);
      for (const b of sources.sharedBoards?.() ?? []) this.inc({ engine: b.engine });
    },
  });
  new Gauge({
    name: 'dozen_console_viewers', help: 'Viewers attached to board consoles', registers: [registry],
    collect() {
      this.set(sources.consoleViewers());
    },
  });

  // A job is published on every step change; each finished step is observed once.
  const seen = new Map<string, Set<string>>();
  return {
    registry,
    onDhcpEvent(ev) {
      if (ev.type === 'offer' || ev.type === 'ack' || ev.type === 'nak') dhcpReplies.inc({ type: ev.type });
      else if (ev.type === 'ignored' || ev.type === 'unknown' || ev.type === 'malformed') dhcpIgnored.inc({ reason: ev.type === 'ignored' ? reasonLabel(ev.reason) : ev.type });
    },
    onTransfer(ev) {
      tftpTransfers.inc({ result: ev.ok ? 'ok' : 'error' });
      tftpBytes.inc(ev.bytes);
      tftpSeconds.observe(ev.ms / 1000);
      if (!ev.ok) tftpErrors.inc({ error: reasonLabel(ev.error) });
    },
    onBus(ev) {
      if (ev.type !== 'job') return;
      const job = ev.data as Job;
      const done = seen.get(job.id) ?? new Set<string>();
      for (const st of job.steps) {
        if (done.has(st.name) || !st.startedAt || !st.endedAt || (st.state !== 'done' && st.state !== 'failed')) continue;
        done.add(st.name);
        jobSteps.observe({ kind: job.kind, step: st.name, outcome: st.state }, (Date.parse(st.endedAt) - Date.parse(st.startedAt)) / 1000);
      }
      if (job.state === 'running') seen.set(job.id, done);
      else {
        seen.delete(job.id); // finish() publishes a job once with its final state
        jobs.inc({ kind: job.kind, outcome: job.state });
      }
    },
  };
}

/**
 * A reason as a label: its words before any detail (addresses, MACs, numbers), so the label set stays
 * small whatever a client sends.
 */
export function reasonLabel(reason: string | undefined): string {
  const head = (reason ?? 'unspecified').split(/[:(]/)[0]!.toLowerCase();
  const words = head.replace(/([0-9a-f]{2}[:-]){5}[0-9a-f]{2}|\d+(\.\d+)*/g, '').replace(/[^a-z ]+/g, ' ').trim().split(/\s+/).filter(Boolean);
  return words.slice(0, 6).join('_') || 'unspecified';
}

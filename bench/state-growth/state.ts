/**
 * The state a full rack leaves behind, for bench/state-growth.ts: one real boot cycle through the real
 * code (LeaseService, BootService, BoardEvents) gives the records a boot leaves, and those records,
 * re-numbered and re-timed, make the state document of N boards with B boots of history each.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { loadConfig, type Config } from '../../src/config.js';
import { BootService } from '../../src/boot/service.js';
import type { DhcpEvent, DhcpRequestInfo } from '../../src/boot/dhcp/server.js';
import type { TransferEvent } from '../../src/boot/tftp/server.js';
import { newBootToken } from '../../src/leases/metadata.js';
import type { ImageCatalog } from '../../src/images/catalog.js';
import type { Inventory } from '../../src/inventory/boards.js';
import type { BoardEvents } from '../../src/inventory/events.js';
import type { LeaseService } from '../../src/leases/service.js';
import { emptyState, stateSchema, type Board, type Job, type Lease, type State, type Transition } from '../../src/store/schema.js';
import { apiHarness } from '../../test/helpers/api-harness.js';

/** The image every board boots (test/helpers/fixtures.ts makeImageRoot). */
export const IMAGE = 'test';
const KERNEL = `images/${IMAGE}/vmlinuz`;
const BOOT_FILES: Array<[string, number]> = [
  ['boot.scr.uimg', 2_048],
  [KERNEL, 300_000],
  [`images/${IMAGE}/initrd.img`, 100_000],
  [`images/${IMAGE}/dtbs/sun7i-a20-bananapi.dtb`, 30_000],
];

/** Board i of a rack: ids sort in enrolment order; addresses in 127.10.0.0/16 (the worker's subnet is 127.0.0.0/8). */
export function boardAt(i: number, serial?: string): Omit<Board, 'state' | 'createdAt'> {
  return {
    id: `b-${String(i).padStart(5, '0')}`,
    mac: `02:00:00:0a:${(i >> 8).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`,
    model: 'bananapi',
    arch: 'armv7',
    ip: `127.10.${(i + 1) >> 8}.${(i + 1) & 255}`,
    ...(serial ? { serial } : {}),
    power: { driver: 'command', on: 'true', off: 'true', cycle: 'true' }, // never boots anything
    image: IMAGE,
  };
}

/**
 * What one boot of a board sends the boot servers, as BootService sees it: U-Boot's DHCP (offer, ack),
 * its TFTP fetches (boot script, kernel, initrd, device tree), then the OS's own DHCP (offer, ack).
 */
export function replayBoot(boot: BootService, b: { mac: string; ip: string }): number {
  const info = (vendorClass: string, clientArch?: number): DhcpRequestInfo => ({ mac: b.mac, msgType: 3, xid: 1, giaddr: '0.0.0.0', ciaddr: '0.0.0.0', vendorClass, ...(clientArch === undefined ? {} : { clientArch }), paramRequestList: [1, 3, 6, 66, 67] });
  const dhcp = (type: DhcpEvent['type'], i: DhcpRequestInfo) => boot.onDhcpEvent({ type, mac: b.mac, ip: b.ip, info: i });
  const fw = info('U-Boot.armv7', 22);
  dhcp('offer', fw);
  dhcp('ack', fw);
  for (const [path, bytes] of BOOT_FILES) {
    const ev: TransferEvent = { client: { address: b.ip, port: 1024 }, path, ok: true, bytes, ms: Math.max(1, Math.round(bytes / 2000)), blksize: 1468, windowsize: 16 };
    boot.onTransfer(ev);
  }
  const os = info('udhcp 1.36.1');
  dhcp('offer', os);
  dhcp('ack', os);
  return 4 + BOOT_FILES.length;
}

export function bootService(d: { config: Config; inventory: Inventory; images: ImageCatalog; events: BoardEvents; leases: LeaseService }): BootService {
  return new BootService({ config: d.config, inventory: d.inventory, images: d.images, events: d.events, leaseOnBoard: (id) => d.leases.leaseOnBoard(id) });
}

/** The records one boot cycle (lease → boot → active → release) leaves in the state document. */
export interface BootTemplate {
  boardId: string;
  tenantId: string;
  /** The lease once released, its provision and release jobs, and the transitions of the cycle. */
  released: { lease: Lease; jobs: Job[]; transitions: Transition[] };
  /** The lease while active (a full rack's live leases), with its provision job. */
  active: { lease: Lease; jobs: Job[]; transitions: Transition[] };
  enrolTransition: Transition;
  /** Bytes the state file grew by over the cycle. */
  stateBytesPerBoot: number;
  /** Board events the cycle left in memory (BoardEvents). */
  eventsPerBoot: number;
  jobStepsPerBoot: number;
}

/**
 * One real boot cycle: a board enrolled through the API (command power `true`), a lease through the
 * API, its boot replayed into the real BootService when the job waits for DHCP, the OS's phone-home
 * noted, then the tenant's release: every record comes from the code that writes it in production.
 */
export async function calibrate(imagesRoot: string): Promise<BootTemplate> {
  const h = await apiHarness({
    timeouts: { actionMs: 30_000, bootMs: 30_000, osMs: 30_000 },
    network: { join: async () => {}, leave: async () => {}, fenced: () => true }, // as under a fencing driver: the network step runs
  });
  try {
    const board = { ...boardAt(1), id: 'calib-board', ip: '10.77.0.2' };
    const enrol = await h.api('POST', '/boards', board);
    if (enrol.status !== 201) throw new Error(`calibration enrol: ${JSON.stringify(enrol.body)}`);
    const token = (await h.api('POST', '/tenants', { id: 'calib-tenant', name: 'calibration' })).body.token as string;
    const config = loadConfig(undefined, { lab: { enabled: false }, network: { driver: 'none' }, imagesDir: imagesRoot });
    const boot = bootService({ config, inventory: h.inventory, images: h.images, events: h.events, leases: h.leases });
    let replayed = false;
    const off = h.bus.subscribe((ev) => {
      const job = ev.data as Job;
      if (ev.type !== 'job' || replayed || !job.steps.some((s) => s.name === 'dhcp' && s.state === 'running')) return;
      replayed = true;
      replayBoot(boot, board);
      h.signals.note(job.leaseId, 'metadata');
      h.signals.note(job.leaseId, 'phone-home');
    });
    const before = statSync(h.store.path).size;
    const made = await h.api('POST', '/leases', { image: IMAGE, sshKeys: ['ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB1bench bench@dozen'] }, token);
    if (made.status !== 202) throw new Error(`calibration lease: ${JSON.stringify(made.body)}`);
    const leaseId = made.body.lease.id as string;
    const prov = await h.leases.settle(made.body.job.id);
    off();
    if (prov.state !== 'succeeded') throw new Error(`calibration provision job ${prov.state}: ${prov.error}`);
    const snap = () => structuredClone(h.store.state) as State;
    const s1 = snap();
    const transitionsOf = (s: State) => s.transitions.filter((t) => t.boardId === board.id);
    const active = { lease: s1.leases.find((l) => l.id === leaseId)!, jobs: s1.jobs.filter((j) => j.leaseId === leaseId), transitions: transitionsOf(s1).slice(1) };
    const rel = await h.api('DELETE', `/leases/${leaseId}`, undefined, token);
    if (rel.status !== 202) throw new Error(`calibration release: ${JSON.stringify(rel.body)}`);
    const relJob = await h.leases.settle(rel.body.job.id);
    if (relJob.state !== 'succeeded') throw new Error(`calibration release job ${relJob.state}: ${relJob.error}`);
    const s2 = snap();
    const after = statSync(h.store.path).size;
    const all = transitionsOf(s2);
    const released = { lease: s2.leases.find((l) => l.id === leaseId)!, jobs: s2.jobs.filter((j) => j.leaseId === leaseId), transitions: all.slice(1) };
    if (released.lease.state !== 'released' || released.jobs.length !== 2) throw new Error(`calibration: unexpected records ${JSON.stringify(released)}`);
    return {
      boardId: board.id,
      tenantId: 'calib-tenant',
      released,
      active,
      enrolTransition: all[0]!,
      stateBytesPerBoot: after - before,
      eventsPerBoot: h.events.list(board.id).length,
      jobStepsPerBoot: released.jobs.reduce((a, j) => a + j.steps.length, 0),
    };
  } finally {
    await h.close();
  }
}

const ISO = /\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z/g;

/** A template's records for another board, lease and time: ids replaced, every timestamp moved by the same amount. */
function instantiate<T>(tmpl: T, ids: Array<[string, string]>, shiftMs: number): T {
  let text = JSON.stringify(tmpl);
  for (const [from, to] of ids) text = text.split(from).join(to);
  text = text.replace(ISO, (t) => new Date(Date.parse(t) + shiftMs).toISOString());
  return JSON.parse(text) as T;
}

export interface RackSpec {
  /** Boards in the rack, each holding a live (active) lease. */
  boards: number;
  /** Free boards besides, for the allocation measurements. */
  spare: number;
  /** Past boot cycles (released leases with their jobs) per rack board. */
  bootsPerBoard: number;
  /** Serial line of every board (a sink that accepts and stays quiet). */
  serial: string;
  /** Live leases per tenant. */
  boardsPerTenant: number;
}

const MAX_TRANSITIONS = 5000; // src/inventory/boards.ts (kept in the state file)
const hex = (n: number, w = 10) => n.toString(16).padStart(w, '0');

/** The state document of a full rack, schema-checked (as Store.open would check it). */
export function rackState(spec: RackSpec, t: BootTemplate, now = Date.now()): State {
  const s = emptyState();
  s.controllerId = 'bench-state-growth';
  const total = spec.boards + spec.spare;
  const tenants = Math.max(1, Math.ceil(spec.boards / spec.boardsPerTenant));
  const day = 86_400_000;
  const t0 = Date.parse(t.released.lease.createdAt);
  for (let k = 0; k < tenants; k++) {
    const id = `t-${String(k).padStart(4, '0')}`;
    const createdAt = new Date(now - 25 * day).toISOString();
    s.tenants.push({ id, name: `tenant ${k}`, createdAt });
    s.tokens.push({ id: hex(k, 12), tenantId: id, hash: randomBytes(32).toString('hex'), createdAt });
  }
  let seq = 0;
  const transitions: Transition[] = [];
  for (let i = 0; i < total; i++) {
    const b = boardAt(i, spec.serial);
    const createdAt = new Date(now - 28 * day + i * 1000).toISOString();
    s.boards.push({ ...b, state: 'available', createdAt });
    transitions.push({ ...t.enrolTransition, boardId: b.id, time: createdAt });
    if (i >= spec.boards) continue;
    const tenant = `t-${String(Math.floor(i / spec.boardsPerTenant)).padStart(4, '0')}`;
    const cycle = (tmpl: BootTemplate['released'], start: number) => {
      const ids: Array<[string, string]> = [
        [t.boardId, b.id],
        [t.tenantId, tenant],
        [tmpl.lease.id, `l-${hex(++seq)}`],
        ...tmpl.jobs.map((j): [string, string] => [j.id, `j-${hex(++seq)}`]),
        ...(tmpl.lease.bootToken ? [[tmpl.lease.bootToken, newBootToken()] as [string, string]] : []),
      ];
      const r = instantiate(tmpl, ids, start - t0);
      s.leases.push(r.lease);
      s.jobs.push(...r.jobs);
      transitions.push(...r.transitions);
    };
    // History: one cycle a day or so (all within keepReleasedDays, so the reaper keeps them), then the live lease.
    for (let k = 0; k < spec.bootsPerBoard; k++) cycle(t.released, now - (spec.bootsPerBoard + 1 - k) * 2 * 3_600_000 * 10 + i * 1000);
    cycle(t.active, now - 3_600_000 + i * 1000);
    s.boards[i]!.state = 'active';
  }
  transitions.sort((a, b) => a.time.localeCompare(b.time));
  s.transitions = transitions.slice(-MAX_TRANSITIONS);
  return stateSchema.parse(s);
}

/** As the store writes it (src/store/store.ts DurableJsonAdapter.write). */
export function writeState(path: string, s: State): number {
  const text = JSON.stringify(s) + '\n';
  writeFileSync(path, text);
  return Buffer.byteLength(text);
}

/** Bytes of each top-level part of a state file, as written. */
export function stateBreakdown(path: string): Record<string, number> {
  const s = JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  return Object.fromEntries(Object.entries(s).map(([k, v]) => [k, Buffer.byteLength(JSON.stringify(v))]));
}

/** What the parent asks of bench/state-growth/worker.ts (one rack size). */
export interface WorkerSpec {
  dataDir: string;
  imagesDir: string;
  boards: number;
  spare: number;
  bootsPerBoard: number;
  /** Store.update and GET samples. */
  samples: number;
  /** Lease requests one after another (each once its job waits for DHCP), then this many at once. */
  sequential: number;
  batch: number;
  /** Batches of ours, each paired with a batch of the fsync-only reference (the ratio is their median). */
  rounds: number;
}

/** The line the worker prints its result on. */
export const MARK = 'RESULT ';
/** The page size of the judged list requests: full at every N (N = 10 has 10 live leases, and 10 + BATCH + SEQUENTIAL boards). */
export const FIXED_PAGE = 10;

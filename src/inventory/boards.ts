import { z } from 'zod';
import type { Store } from '../store/store.js';
import { boardSchema, discoveredSchema, type Board, type Discovered, type State } from '../store/schema.js';
import { canTransition } from './lifecycle.js';
import { findModel } from './models.js';
import { ConflictError, BadRequestError, NotFoundError } from '../util/errors.js';
import { inSubnet, parseCidr, type Subnet } from '../util/net.js';
import type { ImageCatalog } from '../images/catalog.js';
import { powerDriver } from '../power/registry.js';
import { firmwareDriver } from '../firmware/registry.js';

// `role` is not input: making a board shared starts a lease (POST /v1/boards/:id/role, src/shared-boards).
export const boardInputSchema = boardSchema.omit({ state: true, stateReason: true, createdAt: true, role: true, sharedBy: true });
export type BoardInput = z.infer<typeof boardInputSchema>;
export const boardPatchSchema = boardInputSchema.omit({ id: true }).partial().strict();
export type BoardPatch = z.infer<typeof boardPatchSchema>;

/** States in which a board is in a tenant's hands: it cannot be removed. */
const BUSY = new Set<Board['state']>(['provisioning', 'active', 'releasing']);
/** Cap on remembered unknown MACs, so a DHCP flood cannot grow the state file without bound. */
const MAX_DISCOVERED = 1000;
/** Unknown-MAC sightings reach the state file at most this often. */
const DISCOVERY_WRITE_MS = 1000;

export interface InventoryOptions {
  store: Store;
  images: ImageCatalog;
  subnet: string;
  bootIp: string;
}

/** Enrolled boards and unknown MACs seen on the boot network. */
export class Inventory {
  private readonly subnet: Subnet;
  private readonly listeners = new Set<(boards: Board[]) => void>();
  /** DHCP requests of unknown MACs not yet added to their stored count. */
  private readonly pending = new Map<string, { count: number; firstSeen: string; lastSeen: string; extra: Record<string, unknown> }>();
  private nextWrite?: Promise<void>;
  private flushing?: Promise<void>;
  private lastDiscoveryWrite = 0;

  /** Called after boards are added, changed or removed (console sessions follow serial lines). */
  onChange(fn: (boards: Board[]) => void): void {
    this.listeners.add(fn);
  }

  private changed(): void {
    const boards = this.list();
    for (const l of this.listeners) l(boards);
  }
  constructor(private readonly o: InventoryOptions) {
    this.subnet = parseCidr(o.subnet);
  }

  list(): Board[] {
    return this.o.store.state.boards.map((b) => ({ ...b }));
  }

  /** Every board, read-only and uncopied (callers copy what they return). */
  all(): readonly Readonly<Board>[] {
    return this.o.store.state.boards;
  }

  /** A board's place in all(), from the index; -1 if unknown. */
  position(id: string): number {
    return this.lookup('id', id) ? this.index!.id.get(id)! : -1;
  }

  /** The board itself (read-only), or undefined: for the boot path, which must not copy the rack per request. */
  find(id: string): Readonly<Board> | undefined {
    return this.lookup('id', id);
  }

  get(id: string): Board {
    const b = this.o.store.state.boards.find((x) => x.id === id);
    if (!b) throw new NotFoundError(`board ${id}`);
    return { ...b };
  }

  /** Every DHCP packet and TFTP request looks a board up: by index, so the cost does not grow with the rack. */
  byMac(mac: string): Board | undefined {
    return this.lookup('mac', mac);
  }

  byIp(ip: string): Board | undefined {
    return this.lookup('ip', ip);
  }

  /**
   * Positions in the state's boards array by id, MAC and IP. Rebuilt when Inventory changes a board (it
   * is the only writer of ids, MACs and IPs), when the array is another one (a rolled-back update) or has
   * another length, or when the board at a position no longer matches.
   */
  private index: { boards: readonly Board[]; length: number; id: Map<string, number>; mac: Map<string, number>; ip: Map<string, number> } | undefined;

  private lookup(key: 'id' | 'mac' | 'ip', value: string): Board | undefined {
    const boards = this.o.store.state.boards;
    for (let attempt = 0; attempt < 2; attempt++) {
      if (this.index?.boards !== boards || this.index.length !== boards.length) {
        const by = (k: 'id' | 'mac' | 'ip') => new Map(boards.map((b, i) => [b[k], i]));
        this.index = { boards, length: boards.length, id: by('id'), mac: by('mac'), ip: by('ip') };
      }
      const i = this.index[key].get(value);
      if (i === undefined) return undefined;
      const b = boards[i];
      if (b?.[key] === value) return b;
      this.index = undefined;
    }
    return undefined;
  }

  async create(input: BoardInput): Promise<Board> {
    await this.checkImage(input.image);
    checkPower(input.power);
    if (input.firmware) checkFirmware(input.firmware);
    this.checkIp(input.ip);
    checkModel(input);
    return this.o.store.update((s) => {
      this.index = undefined;
      this.checkUnique(s.boards, input);
      const board: Board = { ...input, state: 'enrolled', createdAt: new Date().toISOString() };
      s.boards.push(board);
      applyTransition(s, board.id, 'available', 'enrolled');
      s.discovered = s.discovered.filter((d) => d.mac !== input.mac); // enrolling a discovered MAC
      return { ...board };
    }).finally(() => this.changed());
  }

  async patch(id: string, patch: BoardPatch): Promise<Board> {
    if (patch.image !== undefined) await this.checkImage(patch.image);
    if (patch.ip !== undefined) this.checkIp(patch.ip);
    if (patch.power !== undefined) checkPower(patch.power);
    if (patch.firmware) checkFirmware(patch.firmware);
    return this.o.store.update((s) => {
      const i = s.boards.findIndex((b) => b.id === id);
      if (i < 0) throw new NotFoundError(`board ${id}`);
      const next = { ...s.boards[i]!, ...patch };
      checkModel(next);
      this.checkUnique(s.boards.filter((_, j) => j !== i), next);
      this.index = undefined;
      s.boards[i] = next;
      return { ...next };
    }).finally(() => this.changed());
  }

  async remove(id: string): Promise<void> {
    await this.o.store.update((s) => {
      const b = s.boards.find((x) => x.id === id);
      if (!b) throw new NotFoundError(`board ${id}`);
      if (BUSY.has(b.state)) throw new ConflictError(`board ${id} is ${b.state}; release its lease first`);
      this.index = undefined;
      s.boards = s.boards.filter((x) => x.id !== id);
    }).finally(() => this.changed());
  }

  /** Move a board along its lifecycle (an illegal transition is an error), recorded with its reason. */
  async transition(id: string, to: Board['state'], reason: string): Promise<Board> {
    return this.o.store.update((s) => ({ ...applyTransition(s, id, to, reason) }));
  }

  discovered(): Discovered[] {
    return this.o.store.state.discovered.map((d) => ({ ...d }));
  }

  /**
   * Record a DHCP request from a MAC we do not know. Sightings collect in memory (at most
   * MAX_DISCOVERED MACs) and reach the state file in one batched write at most once a second, so a
   * board flooding random MACs costs one write a second, not one per packet, and the DHCP path never
   * waits for the disk (it need not await this). A MAC seen within the last minute only adds to its
   * count. Resolves when the sighting is written.
   */
  noteUnknown(mac: string, extra: { vendorClass?: string; clientArch?: number } = {}): Promise<void> {
    const now = new Date().toISOString();
    const cur = this.pending.get(mac);
    if (cur) {
      cur.count++;
      cur.lastSeen = now;
      Object.assign(cur.extra, clean(extra));
    } else {
      if (this.pending.size >= MAX_DISCOVERED) return this.flushing ?? Promise.resolve(); // a flood: counts are best effort
      this.pending.set(mac, { count: 1, firstSeen: now, lastSeen: now, extra: clean(extra) });
    }
    return this.scheduleDiscoveryWrite();
  }

  private scheduleDiscoveryWrite(): Promise<void> {
    this.nextWrite ??= new Promise<void>((resolve, reject) => {
      const wait = Math.max(0, this.lastDiscoveryWrite + DISCOVERY_WRITE_MS - Date.now());
      setTimeout(() => {
        this.nextWrite = undefined;
        this.flushing = this.writeDiscovered().finally(() => (this.flushing = undefined));
        this.flushing.then(resolve, reject);
      }, wait).unref();
    });
    return this.nextWrite;
  }

  private async writeDiscovered(): Promise<void> {
    const batch = [...this.pending];
    this.pending.clear();
    this.lastDiscoveryWrite = Date.now();
    if (!batch.length) return;
    await this.o.store.update((s) => {
      const enrolled = new Set(s.boards.map((b) => b.mac));
      for (const [mac, p] of batch) {
        if (enrolled.has(mac)) continue; // enrolled since it was seen
        const d = s.discovered.find((x) => x.mac === mac);
        if (d) {
          // within a minute of the last write, only the count changes (no churn for a chatty board)
          if (Date.parse(p.lastSeen) - Date.parse(d.lastSeen) >= 60_000) d.lastSeen = p.lastSeen;
          d.count += p.count;
          Object.assign(d, p.extra);
        } else {
          s.discovered.push(discoveredSchema.parse({ mac, firstSeen: p.firstSeen, lastSeen: p.lastSeen, count: p.count, ...p.extra }));
        }
      }
      if (s.discovered.length > MAX_DISCOVERED) {
        s.discovered.sort((a, b) => a.lastSeen.localeCompare(b.lastSeen));
        s.discovered.splice(0, s.discovered.length - MAX_DISCOVERED);
      }
    });
  }

  private async checkImage(name: string): Promise<void> {
    if (!(await this.o.images.get(name))) {
      const known = (await this.o.images.list()).map((i) => i.name);
      throw new BadRequestError(`unknown image "${name}" (known: ${known.join(', ') || 'none — build one, see images/README.md'})`);
    }
  }

  private checkIp(ip: string): void {
    if (!inSubnet(ip, this.subnet)) throw new BadRequestError(`ip ${ip} is outside the boot subnet ${this.o.subnet}`);
    if (ip === this.o.bootIp) throw new BadRequestError(`ip ${ip} is the boot server's own address`);
  }

  private checkUnique(others: Board[], b: Pick<Board, 'id' | 'mac' | 'ip'>): void {
    for (const o of others) {
      if (o.id === b.id) throw new ConflictError(`board ${b.id} already exists`);
      if (o.mac === b.mac) throw new ConflictError(`MAC ${b.mac} is already enrolled as board ${o.id}`);
      if (o.ip === b.ip) throw new ConflictError(`ip ${b.ip} is already reserved for board ${o.id}`);
    }
  }
}

/** Cap on recorded transitions kept in the state file. */
const MAX_TRANSITIONS = 5000;

/** Apply a lifecycle transition inside a store update (so it can share one atomic write with a lease). */
export function applyTransition(s: State, id: string, to: Board['state'], reason: string): Board {
  const b = s.boards.find((x) => x.id === id);
  if (!b) throw new NotFoundError(`board ${id}`);
  if (!canTransition(b.state, to)) throw new ConflictError(`board ${id} cannot go from ${b.state} to ${to}`);
  s.transitions.push({ time: new Date().toISOString(), boardId: id, from: b.state, to, reason });
  if (s.transitions.length > MAX_TRANSITIONS) s.transitions.splice(0, s.transitions.length - MAX_TRANSITIONS);
  b.state = to;
  if (to === 'error' || to === 'maintenance') b.stateReason = reason;
  else delete b.stateReason;
  return b;
}

function checkPower(spec: Board['power']): void {
  try {
    powerDriver(spec); // constructing a driver validates its parameters
  } catch (err) {
    throw new BadRequestError(`power: ${(err as Error).message}`);
  }
}

function checkFirmware(spec: NonNullable<Board['firmware']>): void {
  try {
    firmwareDriver(spec);
  } catch (err) {
    throw new BadRequestError(`firmware: ${(err as Error).message}`);
  }
}

function clean<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** A board of a known model has that model's arch (an unknown model is the operator's own: any arch). */
function checkModel(b: Pick<Board, 'model' | 'arch'>): void {
  const m = findModel(b.model);
  if (m && m.arch !== b.arch) throw new BadRequestError(`arch: model ${b.model} is ${m.arch}, not ${b.arch}`);
}

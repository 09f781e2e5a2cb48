import { randomBytes } from 'node:crypto';
import type { Principal } from '../auth/tokens.js';
import { authz, consoleIdOf } from '../auth/authz.js';
import { forPrincipal } from '../auth/redact.js';
import { hashConsolePassword } from './console-password.js';
import type { HistoryLog } from '../store/history.js';
import type { Config } from '../config.js';
import { fitImage } from '../boot/image-fit.js';
import { imageArches, type Image, type ImageCatalog } from '../images/catalog.js';
import { findModel, modelFor } from '../inventory/models.js';
import { applyTransition, type Inventory } from '../inventory/boards.js';
import type { BoardEvents } from '../inventory/events.js';
import { log } from '../log.js';
import { powerDriver } from '../power/registry.js';
import { firmwareDriver } from '../firmware/registry.js';
import { SYSTEM_TENANT, type Board, type Job, type Lease, type State } from '../store/schema.js';
import type { Store } from '../store/store.js';
import { BadRequestError, ConflictError, HttpError, NotFoundError } from '../util/errors.js';
import type { Bus } from './bus.js';
import { JobRunner, newJob, stepList, type StepImpl, type StepImpls } from './jobs.js';
import type { BoardStorage, ConsoleHooks, ContainerFailover, ContainerLeases, NetworkHooks } from './ports.js';
import type { CreateLease } from './schemas.js';
import { LeaseSignals, waitForBoardEvent } from './waits.js';
import { newBootToken } from './metadata.js';
import { jobSteps, type BoardStep, type ContainerStep } from './steps.js';
import { settleLease } from './settle.js';

export interface LeaseTimeouts {
  /** Power, disk and other server-side steps. */
  actionMs: number;
  /** From power-on to the board's DHCP request and kernel fetch. */
  bootMs: number;
  /** From kernel fetch to the OS phoning home (a Debian boot under emulation is slow). */
  osMs: number;
}

export interface LeaseServiceDeps {
  store: Store;
  inventory: Inventory;
  images: ImageCatalog;
  events: BoardEvents;
  bus: Bus;
  signals: LeaseSignals;
  storage?: BoardStorage;
  containers?: ContainerLeases;
  console?: ConsoleHooks;
  network?: NetworkHooks;
  timeouts?: Partial<LeaseTimeouts>;
  /** Live leases one tenant may hold (default: unbounded). */
  leasesPerTenant?: number;
  /** Power actions one lease may ask for per minute (default: unbounded). */
  powerCallsPerMinute?: number;
  /** Memory (MiB) and CPUs one tenant's live container leases may hold together (default: unbounded). */
  containerQuota?: { memoryMb: number; cpus: number };
  /** Where finished jobs and long-released leases go (src/store/history.ts); without it they are deleted after keepMs. */
  history?: HistoryLog;
  /** Engine leases (shared boards) get a blank data disk of this size beside the root, for Docker's data-root. */
  engineDataDiskBytes?: number;
}

/** What config.leases and config.limits ask of the lease service. */
export function leaseLimits(config: Pick<Config, 'leases' | 'limits'>): Pick<LeaseServiceDeps, 'timeouts' | 'leasesPerTenant' | 'powerCallsPerMinute' | 'containerQuota'> {
  return {
    timeouts: { actionMs: config.leases.actionTimeoutMs, bootMs: config.leases.bootTimeoutMs, osMs: config.leases.osTimeoutMs },
    leasesPerTenant: config.limits.leasesPerTenant,
    powerCallsPerMinute: config.limits.powerCallsPerMinute,
    containerQuota: { memoryMb: config.limits.containerMemoryMbPerTenant, cpus: config.limits.containerCpusPerTenant },
  };
}

/** States a lease is live in (holds a board or container). */
const LIVE: Array<Lease['state']> = ['provisioning', 'active', 'reimaging', 'releasing', 'migrating', 'error'];

/**
 * Leases: allocation (atomic: one store update picks the board, marks it and records lease and job),
 * and the provision / reimage / release jobs that drive storage, power and the boot.
 */
export class LeaseService {
  readonly jobs: JobRunner;
  private readonly t: LeaseTimeouts;
  private readonly running = new Map<string, Promise<Job>>();
  private readonly aborts = new Map<string, AbortController>();

  constructor(private readonly d: LeaseServiceDeps) {
    this.jobs = new JobRunner(d.store, d.bus);
    this.t = { actionMs: 60_000, bootMs: 120_000, osMs: 900_000, ...d.timeouts };
  }

  list(p: Principal): Lease[] {
    return this.present(p, this.visible(p));
  }

  /** The leases `p` may see, uncopied (for paging before presenting). */
  visible(p: Principal): readonly Lease[] {
    return p.role === 'admin' ? this.d.store.state.leases : this.d.store.state.leases.filter((l) => authz.canSeeLease(p, l));
  }

  /** Leases as `p` may see them: copies, secrets left out. */
  present(p: Principal, leases: readonly Lease[]): Lease[] {
    return leases.map((l) => forPrincipal(p, 'lease', publicLease(l)));
  }

  get(p: Principal, id: string): Lease {
    return forPrincipal(p, 'lease', publicLease(authz.lease(this.d.store, p, id)));
  }

  /** A lease, from the state or, long released, from the history. */
  async getAny(p: Principal, id: string): Promise<Lease> {
    if (this.d.store.state.leases.some((l) => l.id === id) || !this.d.history) return this.get(p, id);
    const r = await this.d.history.find('lease', id);
    if (!r || !authz.canSeeLease(p, { tenantId: r.tenantId })) throw new NotFoundError(`lease ${id}`);
    return forPrincipal(p, 'lease', publicLease(r.data as Lease));
  }

  /**
   * The lease that holds a board now, if any. Every DHCP answer and TFTP request asks, so it is an index:
   * board → position of its live lease, rebuilt when the leases array is another one or has another
   * length (a lease added, archived, a rolled-back write), and checked at every hit.
   */
  leaseOnBoard(boardId: string): Lease | undefined {
    const leases = this.d.store.state.leases;
    for (let attempt = 0; attempt < 2; attempt++) {
      if (this.onBoard?.leases !== leases || this.onBoard.length !== leases.length) {
        const byBoard = new Map<string, number>();
        leases.forEach((l, i) => l.boardId && LIVE.includes(l.state) && byBoard.set(l.boardId, i));
        this.onBoard = { leases, length: leases.length, byBoard };
      }
      const i = this.onBoard.byBoard.get(boardId);
      if (i === undefined) return undefined;
      const l = leases[i];
      if (l?.boardId === boardId && LIVE.includes(l.state)) return l;
      this.onBoard = undefined; // that lease has ended: look again
    }
    return undefined;
  }
  private onBoard: { leases: readonly Lease[]; length: number; byBoard: Map<string, number> } | undefined;

  async create(p: Principal, input: CreateLease): Promise<{ lease: Lease; job: Job }> {
    const tenantId = p.role === 'admin' ? input.tenant : p.tenantId;
    if (!tenantId) throw new BadRequestError('tenant: admins lease on behalf of a tenant; give "tenant"');
    if (p.role !== 'admin' && input.tenant && input.tenant !== p.tenantId) throw new BadRequestError('tenant: only admins may name a tenant');
    if (!this.d.store.state.tenants.some((t) => t.id === tenantId)) throw new BadRequestError(`tenant: unknown tenant ${tenantId}`);
    // kind container names a container image; board and any name a board image (any may also name a container image).
    const image = input.kind === 'container' ? null : await this.d.images.get(input.image);
    if (input.kind !== 'container' && !image) {
      throw new BadRequestError(`image: unknown image "${input.image}" (known: ${(await this.d.images.list()).map((i) => i.name).join(', ')})`);
    }
    if (image && input.arch && !image.manifest.arches[input.arch]) throw new BadRequestError(`arch: image ${image.name} has no ${input.arch} build (it has ${imageArches(image.manifest).join(', ')})`);
    const containerImage = input.kind === 'container' ? input.image : input.kind === 'any' ? (input.containerImage ?? this.d.containers?.imageNames()[0]) : undefined;
    if (input.kind === 'container' || (input.kind === 'any' && input.containerImage)) {
      if (!this.d.containers?.hasHosts()) throw new ConflictError('no container hosts: configure containers.hosts, or make a board shared (dozen boards set <id> --role shared)');
      if (!containerImage || !this.d.containers.resolveImage(containerImage)) {
        throw new BadRequestError(`${input.kind === 'container' ? 'image' : 'containerImage'}: unknown container image "${containerImage}" (known: ${this.d.containers.imageNames().join(', ') || 'none built'})`);
      }
    }

    if (input.consolePassword && input.kind === 'container') throw new BadRequestError('consolePassword: only board leases have a serial console login');
    const consolePasswordHash = input.consolePassword ? await hashConsolePassword(input.consolePassword) : undefined;
    const id = `l-${randomBytes(5).toString('hex')}`;
    const base = {
      id,
      tenantId,
      image: image?.name ?? containerImage!,
      sshKeys: input.sshKeys,
      hostname: input.hostname ?? id,
      ...(consolePasswordHash ? { consolePasswordHash } : {}),
      state: 'provisioning' as const,
      createdAt: new Date().toISOString(),
      ...(input.expiresAt ? { expiresAt: new Date(input.expiresAt).toISOString() } : {}),
    };
    const wantContainer = input.kind === 'container';
    const { lease, job } = await this.d.store.update((s) => {
      // The quota is checked inside the allocating update, so concurrent requests cannot overshoot it.
      const held = s.leases.filter((l) => l.tenantId === tenantId && LIVE.includes(l.state)).length;
      if (this.d.leasesPerTenant !== undefined && held >= this.d.leasesPerTenant) {
        throw new HttpError(403, `lease quota reached: tenant ${tenantId} holds ${held} live leases (limits.leasesPerTenant is ${this.d.leasesPerTenant})`);
      }
      if (!wantContainer && image) {
        const fenced = (id: string) => this.d.network?.fenced?.(id) ?? true;
        const board = pickBoard(s, input, image, fenced);
        if (board) {
          applyTransition(s, board.id, 'provisioning', `lease ${id}`);
          const lease: Lease = { ...base, kind: 'board', boardId: board.id, ...(board.ip ? { boardIp: board.ip } : {}) };
          const job = newJob('provision', id, tenantId, jobSteps('board', 'provision'));
          lease.jobId = job.id;
          s.leases.push(lease);
          s.jobs.push(job);
          return { lease: structuredClone(lease), job: structuredClone(job) };
        }
        if (input.kind === 'board' || !this.d.containers?.hasHosts() || !containerImage) throw new ConflictError(noBoardReason(s, input, image, fenced));
      }
      const size = { memoryMb: input.memory ?? 256, cpus: input.cpus ?? 1 };
      this.checkContainerQuota(s, tenantId, size);
      // A board's console password means nothing to a container (kind any that fell back): not kept.
      const { consolePasswordHash: _unused, ...noPassword } = base as typeof base & { consolePasswordHash?: string };
      const lease: Lease = { ...noPassword, kind: 'container', image: containerImage! };
      const job = newJob('provision', id, tenantId, jobSteps('container', 'provision'), { memoryMb: String(size.memoryMb), cpus: String(size.cpus) });
      return recordNew(s, lease, job);
    });
    this.publishLease(lease);
    this.start(job.id);
    return { lease: publicLease(lease), job };
  }

  /**
   * The controller takes an available board for itself to run a Docker engine on (a shared board,
   * src/shared-boards): role `shared` and an engine lease of `imageName`, provisioned by the same job as a
   * tenant's lease, in one store update. Tenants' allocation passes shared boards over from then on.
   */
  async holdForEngine(boardId: string, imageName: string, by: 'operator' | 'policy' = 'operator'): Promise<{ lease: Lease; job: Job }> {
    const image = await this.d.images.get(imageName);
    if (!image) throw new ConflictError(`image ${imageName} (the shared boards' engine image) is not in the catalog: build it (images/docker-host) or import it`);
    const id = `l-${randomBytes(5).toString('hex')}`;
    const fenced = (b: string) => this.d.network?.fenced?.(b) ?? true;
    const { lease, job } = await this.d.store.update((s) => {
      const board = s.boards.find((b) => b.id === boardId);
      if (!board) throw new NotFoundError(`board ${boardId}`);
      if (board.state !== 'available') throw new ConflictError(`board ${boardId} is ${board.state}: only an available board becomes shared`);
      const fit = fitImage(image.name, image.manifest, modelFor(board));
      if ('error' in fit) throw new ConflictError(`board ${boardId} cannot run the engine: ${fit.error}`);
      if (!fenced(boardId)) throw new ConflictError(`board ${boardId} has no fenced network port (see GET /v1/network)`);
      board.role = 'shared';
      board.sharedBy = by;
      applyTransition(s, board.id, 'provisioning', `engine lease ${id} (shared board)`);
      const lease: Lease = {
        id,
        tenantId: SYSTEM_TENANT,
        kind: 'board',
        boardId,
        boardIp: board.ip,
        image: image.name,
        sshKeys: [],
        hostname: boardId,
        state: 'provisioning',
        createdAt: new Date().toISOString(),
        purpose: 'engine',
      };
      const job = newJob('provision', id, SYSTEM_TENANT, jobSteps('board', 'provision'));
      return recordNew(s, lease, job);
    });
    this.publishLease(lease);
    this.start(job.id);
    return { lease: publicLease(lease), job };
  }

  /**
   * A tenant's live container leases together stay within limits.containerMemoryMbPerTenant and
   * containerCpusPerTenant: shared boards are shared. Sizes are what each lease's provision job asked for.
   */
  private checkContainerQuota(s: State, tenantId: string, want: { memoryMb: number; cpus: number }): void {
    const q = this.d.containerQuota;
    if (!q) return;
    let memoryMb = 0;
    let cpus = 0;
    for (const l of s.leases.filter((x) => x.tenantId === tenantId && x.kind === 'container' && LIVE.includes(x.state))) {
      const params = s.jobs.find((j) => j.leaseId === l.id && j.kind === 'provision')?.params ?? {};
      memoryMb += Number(params.memoryMb ?? 256);
      cpus += Number(params.cpus ?? 1);
    }
    if (memoryMb + want.memoryMb > q.memoryMb) {
      throw new HttpError(403, `container quota reached: tenant ${tenantId} holds ${memoryMb} MiB in containers and asks for ${want.memoryMb} more (limits.containerMemoryMbPerTenant is ${q.memoryMb})`);
    }
    if (cpus + want.cpus > q.cpus + 1e-9) {
      throw new HttpError(403, `container quota reached: tenant ${tenantId} holds ${+cpus.toFixed(2)} CPUs in containers and asks for ${want.cpus} more (limits.containerCpusPerTenant is ${q.cpus})`);
    }
  }

  async reimage(p: Principal, id: string, image?: string): Promise<{ lease: Lease; job: Job }> {
    const lease = authz.lease(this.d.store, p, id);
    refuseEngineLease(lease, 'reimaged');
    const img = image ? await this.d.images.get(image) : null;
    if (image && !img) throw new BadRequestError(`image: unknown image "${image}"`);
    const board = img && lease.kind === 'board' ? this.d.store.state.boards.find((b) => b.id === lease.boardId) : undefined;
    const fit = board && img && fitImage(img.name, img.manifest, modelFor(board));
    if (fit && 'error' in fit) throw new ConflictError(`${fit.error} (board ${board!.id})`);
    if (lease.state !== 'active' && lease.state !== 'error') throw new ConflictError(`lease ${id} is ${lease.state}; reimage needs an active lease`);
    return this.beginJob(id, 'reimage', (l, s) => {
      if (l.state !== 'active' && l.state !== 'error') throw new ConflictError(`lease ${id} is ${l.state}; reimage needs an active lease`);
      if (image) l.image = image;
      l.state = 'reimaging';
      delete l.stateReason;
      if (l.kind === 'board') applyTransition(s, l.boardId!, 'provisioning', `reimage of lease ${id}`);
    });
  }

  async release(p: Principal | 'system', id: string, reason = 'released by tenant'): Promise<{ lease: Lease; job: Job }> {
    const lease = p === 'system' ? this.d.store.state.leases.find((l) => l.id === id)! : authz.lease(this.d.store, p, id);
    if (p !== 'system') refuseEngineLease(lease, 'released');
    if (lease.state === 'released') throw new ConflictError(`lease ${id} is already released`);
    // Failover is recreating its container elsewhere: a release now would race the new container.
    if (lease.state === 'migrating') throw new ConflictError(`lease ${id} is migrating to another shared board; release it once it is active (or error)`);
    if (lease.state === 'releasing') {
      const job = this.jobs.get(lease.jobId!)!;
      return p === 'system' ? { lease: publicLease(lease), job } : { lease: forPrincipal(p, 'lease', publicLease(lease)), job: forPrincipal(p, 'job', job) };
    }
    // A release wins over any job still running (provision, reimage, power): cancel it and let it stop first.
    for (const j of this.runningJobs(lease.id)) {
      const current = this.running.get(j.id);
      if (!current) continue;
      this.aborts.get(j.id)?.abort(reason);
      await current;
    }
    return this.beginJob(id, 'release', (l, s) => {
      l.state = 'releasing';
      l.stateReason = reason;
      if (l.kind === 'board') applyTransition(s, l.boardId!, 'releasing', `release of lease ${id}: ${reason}`);
    });
  }

  /** Jobs of a lease that have not ended (at most one while the service runs: one job per lease at a time). */
  private runningJobs(leaseId: string, s: Readonly<State> = this.d.store.state): Job[] {
    return s.jobs.filter((j) => j.leaseId === leaseId && j.state === 'running');
  }

  /**
   * Change a lease and record its new job in one store update, then run the job. A release takes over
   * from a job it has cancelled; any other job waits for none: a lease with a job running refuses it (409).
   * A power job is not the lease's job (`jobId`: the provision, reimage or release that made its state),
   * since it changes nothing of the lease: a console opened on the lease stays open across it.
   */
  private async beginJob(id: string, kind: 'reimage' | 'release' | 'power', change: (l: Lease, s: State) => void, params: Record<string, string> = {}): Promise<{ lease: Lease; job: Job }> {
    const r = await this.d.store.update((s) => {
      const l = s.leases.find((x) => x.id === id)!;
      change(l, s);
      const busy = kind === 'release' ? undefined : this.runningJobs(id, s)[0];
      if (busy) throw new ConflictError(`lease ${id} has a ${busy.kind} job running (${busy.id}); wait for it to end${busy.kind === 'power' ? ` or cancel it (POST /v1/jobs/${busy.id}/cancel)` : ''}`);
      const job = newJob(kind, id, l.tenantId, jobSteps(l.kind, kind), params);
      if (kind !== 'power') l.jobId = job.id;
      s.jobs.push(job);
      return { lease: structuredClone(l), job: structuredClone(job) };
    });
    if (kind !== 'power') this.publishLease(r.lease);
    this.start(r.job.id);
    return { lease: publicLease(r.lease), job: r.job };
  }

  /**
   * A tenant's power action, as a job (one `power` step) the caller follows and may cancel. The lease's
   * state does not change, whatever the outcome: a failed action is a failed job.
   */
  async power(p: Principal, id: string, action: PowerAction): Promise<{ lease: Lease; job: Job }> {
    const lease = authz.lease(this.d.store, p, id);
    this.countPowerCall(lease.id);
    const needsActive = (l: Lease) => {
      if (l.state !== 'active' && l.state !== 'error') throw new ConflictError(`lease ${id} is ${l.state}; power needs an active lease`);
    };
    needsActive(lease);
    const r = await this.beginJob(id, 'power', needsActive, { action, by: p.role === 'admin' ? 'admin' : `tenant ${p.tenantId}` });
    return { lease: forPrincipal(p, 'lease', r.lease), job: forPrincipal(p, 'job', r.job) };
  }

  /**
   * Cancel a running power job: its action stops (a manual request leaves the operator's desk, a command
   * is killed) and the job ends failed, "cancelled: …". A provision or reimage is stopped by releasing
   * the lease; a release runs to its end.
   */
  async cancel(p: Principal, jobId: string): Promise<Job> {
    const job = this.job(p, jobId); // 404 unless the caller may see it
    if (job.state !== 'running') throw new ConflictError(`job ${jobId} has already ended (${job.state})`);
    if (job.kind !== 'power') {
      throw new ConflictError(`job ${jobId} is a ${job.kind} job: only power jobs can be cancelled; a provision or reimage is stopped by releasing the lease (DELETE /v1/leases/${job.leaseId})`);
    }
    const run = this.running.get(jobId);
    if (!run) throw new ConflictError(`job ${jobId} is not running in this server yet (it resumes at start); try again`);
    this.aborts.get(jobId)?.abort(`by ${p.role === 'admin' ? 'admin' : `tenant ${p.tenantId}`}`);
    return forPrincipal(p, 'job', await run);
  }

  private readonly powerCalls = new Map<string, number[]>();

  /** A sliding minute per lease: past the limit a power call is refused (429), attempts that failed count too. */
  private countPowerCall(leaseId: string, now = Date.now()): void {
    const max = this.d.powerCallsPerMinute;
    if (max === undefined) return;
    const recent = (this.powerCalls.get(leaseId) ?? []).filter((t) => now - t < 60_000);
    if (recent.length >= max) throw new HttpError(429, `too many power actions for lease ${leaseId}: at most ${max} a minute`);
    recent.push(now);
    this.powerCalls.set(leaseId, recent);
  }

  /**
   * Secrets for the next boot of a lease's board: a metadata token and, with an iSCSI root, a CHAP
   * secret. Whatever a tenant (or anyone who read a boot script) learned of one boot is worthless after
   * the next power cycle.
   */
  private async newBoot(leaseId: string): Promise<void> {
    const lease = this.d.store.state.leases.find((l) => l.id === leaseId);
    if (!lease || lease.kind !== 'board') return;
    const iscsi = lease.iscsi && this.d.storage ? await this.d.storage.newBootSecret(lease) : undefined;
    await this.d.store.update((s) => {
      const l = s.leases.find((x) => x.id === leaseId)!;
      l.bootToken = newBootToken();
      if (iscsi) l.iscsi = iscsi;
    });
  }

  job(p: Principal, id: string): Job {
    const job = this.jobs.get(id); // with its step changes not yet written
    if (!job || !authz.canSeeEvent(p, job.tenantId)) throw new HttpError(404, `job ${id} not found`);
    return forPrincipal(p, 'job', job);
  }

  /** A job, from the state or, finished and superseded, from the history. */
  async jobAny(p: Principal, id: string): Promise<Job> {
    if (this.d.store.state.jobs.some((j) => j.id === id) || !this.d.history) return this.job(p, id);
    const r = await this.d.history.find('job', id);
    if (!r || !authz.canSeeEvent(p, r.tenantId)) throw new HttpError(404, `job ${id} not found`);
    return forPrincipal(p, 'job', r.data as Job);
  }

  /** Wait for a job to end (tests and the CLI use the SSE stream or this). */
  async settle(jobId: string): Promise<Job> {
    return (await this.running.get(jobId)) ?? this.jobs.get(jobId)!;
  }

  /**
   * At start: a lease still provisioning, reimaging or releasing whose job has ended gets that end now.
   * Before a job's end and its lease's state were one write, a crash between the two left such leases,
   * and nothing else would ever move them.
   */
  async settleEndedJobs(): Promise<string[]> {
    const unsettled = (s: Readonly<State>, l: Lease) => {
      if (!['provisioning', 'reimaging', 'releasing'].includes(l.state) || !l.jobId) return undefined;
      const job = s.jobs.find((j) => j.id === l.jobId);
      return job && job.state !== 'running' ? job : undefined;
    };
    const state = this.d.store.state;
    if (!state.leases.some((l) => unsettled(state, l))) return []; // the usual start: no write
    let fixed: Array<{ lease: Lease; line: string }> = [];
    await this.d.store.update((s) => {
      fixed = []; // a replayed batch runs this again
      for (const l of s.leases) {
        const job = unsettled(s, l);
        if (!job) continue;
        const was = l.state;
        settleLease(s, job);
        fixed.push({ lease: structuredClone(l), line: `lease ${l.id} was still ${was} after its ${job.kind} job ${job.id} had ${job.state}: now ${l.state}` });
      }
    });
    for (const { lease } of fixed) {
      if (lease.state === 'released') this.d.signals.forget(lease.id);
      this.publishLease(lease);
    }
    return fixed.map((f) => f.line);
  }

  /**
   * After a restart: resume every job that was running when the server stopped. The API listens before
   * this runs, so a job may have started since (a release): it is not started twice, and a provision or
   * reimage whose lease that release has taken over ends without running (its steps would power the
   * board under the release).
   */
  resumeJobs(): string[] {
    const resumed: string[] = [];
    const superseded = new Map<string, string>();
    for (const job of this.d.store.state.jobs.filter((j) => j.state === 'running')) {
      if (this.running.has(job.id)) continue;
      const owner = this.d.store.state.leases.find((l) => l.id === job.leaseId)?.jobId;
      if (job.kind !== 'power' && owner !== undefined && owner !== job.id) {
        superseded.set(job.id, `superseded by job ${owner}`);
        resumed.push(`job ${job.id} (${job.kind} of lease ${job.leaseId}) not resumed: its lease has moved on to job ${owner}`);
        continue;
      }
      const step = job.steps.find((s) => s.state === 'running' || s.state === 'pending');
      resumed.push(`job ${job.id} (${job.kind} of lease ${job.leaseId}) resumed at step ${step?.name ?? '(end)'}`);
      this.start(job.id);
    }
    if (superseded.size) {
      const ended = this.d.store.update((s) => {
        for (const j of s.jobs) {
          const why = superseded.get(j.id);
          if (!why || j.state !== 'running') continue;
          j.state = 'failed';
          j.endedAt = new Date().toISOString();
          j.error = why;
        }
      });
      ended.catch((err: unknown) => log.error({ err }, 'ending superseded jobs failed'));
    }
    return resumed;
  }

  /** Forget released leases (and their jobs) after `keepMs`, so the state file does not grow forever (no history log). */
  async prune(keepMs: number, now = Date.now()): Promise<number> {
    const old = (l: Lease) => l.state === 'released' && l.releasedAt !== undefined && Date.parse(l.releasedAt) < now - keepMs;
    if (!this.d.store.state.leases.some(old)) return 0;
    return this.d.store.update((s) => {
      const gone = new Set(s.leases.filter(old).map((l) => l.id));
      s.leases = s.leases.filter((l) => !gone.has(l.id));
      s.jobs = s.jobs.filter((j) => !gone.has(j.leaseId));
      return gone.size;
    });
  }

  /**
   * Moves what the state no longer needs to the history log: leases released over `afterMs` ago with all
   * their jobs, and every other finished job except a lease's current one (`jobId`) and its provision job
   * (a reimage reads its parameters). Appended first, removed second: a crash in between leaves a record
   * in both places, never in neither. Returns how many records moved.
   */
  async archive(afterMs: number, now = Date.now()): Promise<number> {
    const history = this.d.history;
    if (!history) return 0;
    const s = this.d.store.state;
    const leasesOut = s.leases.filter((l) => l.state === 'released' && l.releasedAt !== undefined && Date.parse(l.releasedAt) < now - afterMs);
    const outLeases = new Set(leasesOut.map((l) => l.id));
    const keep = new Set<string>();
    for (const l of s.leases) if (!outLeases.has(l.id) && l.jobId) keep.add(l.jobId);
    for (const j of s.jobs) if (j.kind === 'provision' && !outLeases.has(j.leaseId)) keep.add(j.id);
    const jobsOut = s.jobs.filter((j) => j.state !== 'running' && !keep.has(j.id));
    if (!leasesOut.length && !jobsOut.length) return 0;
    const at = new Date(now).toISOString();
    await history.append([
      ...jobsOut.map((j) => ({ kind: 'job' as const, id: j.id, tenantId: j.tenantId, at, data: j })),
      // Without its secrets: the target and the boot are gone, and the history outlives the state.
      ...leasesOut.map((l) => ({ kind: 'lease' as const, id: l.id, tenantId: l.tenantId, at, data: publicLease(l) })),
    ]);
    const outJobs = new Set(jobsOut.map((j) => j.id));
    await this.d.store.update((st) => {
      st.leases = st.leases.filter((l) => !outLeases.has(l.id));
      st.jobs = st.jobs.filter((j) => !outJobs.has(j.id));
    });
    return leasesOut.length + jobsOut.length;
  }

  /** Release leases whose time is up. */
  async reap(now = Date.now()): Promise<string[]> {
    const due = this.d.store.state.leases.filter((l) => l.expiresAt && Date.parse(l.expiresAt) <= now && ['active', 'error', 'provisioning'].includes(l.state));
    for (const l of due) {
      // a provisioning lease is released once its job has ended
      if (l.state === 'provisioning' && this.running.has(l.jobId!)) continue;
      await this.release('system', l.id, `expired at ${l.expiresAt}`).catch((err) => log.warn({ err, lease: l.id }, 'reaper: release failed'));
    }
    return due.map((l) => l.id);
  }

  /**
   * Every `intervalMs`: release the leases whose time is up; move finished jobs and leases released over
   * `archiveAfterMs` ago to the history (which keeps them `keepMs`), or without a history, forget leases
   * released over `keepMs` ago. Returns a stop function.
   */
  startReaper(intervalMs: number, keepMs: number, archiveAfterMs = 3_600_000): () => void {
    const reaper = setInterval(() => {
      void this.reap();
      if (this.d.history) {
        this.archive(archiveAfterMs).catch((err) => log.warn({ err }, 'archiving finished jobs and released leases'));
        this.d.history.prune().catch((err) => log.warn({ err }, 'pruning the history'));
      } else void this.prune(keepMs);
    }, intervalMs);
    return () => clearInterval(reaper);
  }

  /** Board leases whose board is in its tenant's network: the network rejoins them at start. */
  liveBoardLeases(): Array<{ boardId: string; tenantId: string }> {
    // Not `releasing`: a release resumed after its network step would never take the board out again.
    return this.d.store.state.leases.filter((l) => l.kind === 'board' && l.boardId && l.state !== 'released' && l.state !== 'releasing').map((l) => ({ boardId: l.boardId!, tenantId: l.tenantId }));
  }

  /** At start: leases whose root disk storage could not find say so (error), instead of reading `active` to their tenant. */
  async markDisksMissing(leaseIds: string[]): Promise<void> {
    if (!leaseIds.length) return;
    const changed = await this.d.store.update((s) =>
      s.leases
        .filter((x) => leaseIds.includes(x.id))
        .map((l) => {
          l.state = 'error';
          l.stateReason =
            l.kind === 'container'
              ? 'its /data volume is missing from storage (see GET /v1/storage/quarantine); release the lease'
              : 'its root disk is missing from storage (see GET /v1/storage/quarantine); reimage or release the lease';
          return structuredClone(l);
        }),
    );
    for (const l of changed) this.publishLease(l);
  }

  /**
   * Container failover begins: the leases on shared board `from` that it will move go `migrating`, and
   * their tenants see it on the event stream before anything is recreated. Only active leases move: one
   * being released, reimaged or in error is left alone. Returns the ids marked (the only ones to move).
   */
  async beginFailover(leaseIds: string[], from: string, why = `shared board ${from} went down: its container is being recreated on another board`): Promise<string[]> {
    const changed = await this.d.store.update((s) =>
      s.leases
        .filter((l) => leaseIds.includes(l.id) && l.kind === 'container' && l.state === 'active')
        .map((l) => {
          l.state = 'migrating';
          l.stateReason = why;
          return structuredClone(l);
        }),
    );
    for (const l of changed) this.publishLease(l);
    return changed.map((l) => l.id);
  }

  /**
   * At start: a lease left `migrating` by a server that stopped mid-move is marked error (its container
   * may or may not exist on either board); the tenant can reimage or release it. Returns how many.
   */
  async endInterruptedMigrations(): Promise<number> {
    const changed = await this.d.store.update((s) =>
      s.leases
        .filter((l) => l.state === 'migrating')
        .map((l) => {
          l.state = 'error';
          l.stateReason = 'the server stopped while this container was being moved to another shared board; reimage or release the lease';
          return structuredClone(l);
        }),
    );
    for (const l of changed) this.publishLease(l);
    return changed.length;
  }

  /**
   * What container failover did: a moved lease gets its new container record and is active again, one
   * that could not be moved is marked error with the reason. Published like every other lease change,
   * so event streams see migrating → active (or error).
   */
  async recordFailover(f: ContainerFailover, failedWhy = (from: string) => `shared board ${from} went down and the container could not be moved`): Promise<void> {
    const changed = await this.d.store.update((s) => {
      const out = new Map<string, Lease>();
      for (const m of f.moved) {
        const l = s.leases.find((x) => x.id === m.leaseId);
        if (!l || l.state === 'released' || l.state === 'releasing') continue; // never revive a lease its tenant gave up
        l.container = m.container;
        if (l.state === 'migrating') {
          l.state = 'active';
          delete l.stateReason;
        }
        out.set(l.id, l);
      }
      for (const x of f.failed) {
        const l = s.leases.find((y) => y.id === x.leaseId);
        if (!l || l.state === 'released') continue;
        l.state = 'error';
        l.stateReason = `${failedWhy(x.from)}: ${x.error}`;
        out.set(l.id, l);
      }
      return [...out.values()].map((l) => structuredClone(l));
    });
    for (const l of changed) this.publishLease(l);
  }

  private start(jobId: string): void {
    const ac = new AbortController();
    this.aborts.set(jobId, ac);
    // The job's first step runs once the request that started it has been answered (setImmediate comes
    // after the response's write): a caller hears 202 first, and a burst of requests is answered
    // before their jobs' work begins. A release in between finds the job here and cancels it.
    const run = new Promise<void>((r) => setImmediate(r)).then(() => this.runJob(jobId, ac.signal)).finally(() => {
      this.running.delete(jobId);
      this.aborts.delete(jobId);
    });
    // Nobody may be waiting on it (settle() is for tests and callers that follow): a job whose own
    // bookkeeping fails (the state file gone, a store closed under it) is a log line, never an
    // unhandled rejection, which would end the process.
    run.catch((err: unknown) => log.error({ err, jobId }, 'job runner failed'));
    this.running.set(jobId, run);
  }

  private async runJob(jobId: string, cancel: AbortSignal): Promise<Job> {
    const job = this.jobs.get(jobId)!;
    const lease = () => this.d.store.state.leases.find((l) => l.id === job.leaseId)!;
    // A power job leaves the lease's state as it is; the others settle it in the job's own last write,
    // unless a cancelling release came: it decides what happens next.
    const settle = job.kind === 'power' ? undefined : (j: Job, s: State) => settleLease(s, j);
    const result = await this.jobs.run(jobId, lease().kind === 'board' ? this.boardSteps(job, lease) : this.containerSteps(job, lease), cancel, settle);
    if (result.kind === 'release' && lease().state === 'released') this.d.signals.forget(result.leaseId);
    this.publishLease(lease());
    return result;
  }

  private boardSteps(job: Job, lease: () => Lease): StepImpl[] {
    const board = () => this.d.inventory.get(lease().boardId!);
    const power = () => powerDriver(board().power, board().id);
    let bootStart = Date.now();
    const cycle = async (signal?: AbortSignal) => {
      bootStart = Date.now();
      await this.newBoot(lease().id);
      await power().cycle(signal);
      this.d.events.add(board().id, { type: 'power', message: `power cycle (job ${job.id})` });
    };
    const image = async () => {
      const img = await this.d.images.get(lease().image);
      if (!img) throw new Error(`image ${lease().image} is no longer in the catalog`);
      return img;
    };
    const t = this.t;
    const steps: StepImpls<BoardStep> = {
      'power-off': {
        timeoutMs: t.actionMs,
        run: async (signal) => {
          await power().off(signal);
          this.d.events.add(board().id, { type: 'power', message: `power off (job ${job.id})` });
        },
      },
      // Powered off first on release: the board leaves its tenant's network only once it cannot use it.
      network: {
        timeoutMs: t.actionMs,
        run: async () => {
          if (!this.d.network) return 'skipped';
          if (job.kind === 'release') await this.d.network.leave(board().id);
          else await this.d.network.join(board().id, lease().tenantId);
        },
      },
      // Release only (a reimage keeps the tenant): the next tenant must not boot what this one flashed.
      firmware: {
        timeoutMs: t.actionMs,
        run: async () => {
          const spec = board().firmware;
          if (!spec) return 'skipped';
          const fw = firmwareDriver(spec);
          const check = await fw.verify();
          if (check.ok) {
            this.d.events.add(board().id, { type: 'firmware', message: `firmware verified: ${check.detail}` });
            return;
          }
          this.d.events.add(board().id, { type: 'firmware', message: `firmware differs (${check.detail}): restoring` });
          await fw.restore();
          this.d.events.add(board().id, { type: 'firmware', message: 'firmware restored to the known-good image' });
        },
      },
      disk: {
        timeoutMs: t.actionMs,
        run: async () => {
          if (job.kind === 'release') {
            if (!this.d.storage) return 'skipped';
            await this.d.storage.detach(lease());
            return;
          }
          const img = await image();
          if (!this.d.storage || !img.manifest.arches[board().arch]?.rootDisk) return 'skipped';
          if (job.kind === 'reimage') await this.d.storage.detach(lease()); // the tenant's changes go
          // A shared board's engine keeps Docker's data-root on a second, blank LUN (images/docker-host formats it).
          const data = lease().purpose === 'engine' ? { dataDiskBytes: this.d.engineDataDiskBytes ?? 8 * 2 ** 30 } : undefined;
          const rec = await this.d.storage.attach(lease(), board(), img, data);
          await this.d.store.update((s) => {
            s.leases.find((l) => l.id === lease().id)!.iscsi = rec;
          });
        },
      },
      power: {
        timeoutMs: t.actionMs,
        run: async (signal) => {
          if (job.kind === 'power') {
            // A tenant's action: a new boot gets new secrets; the lease's state stays as it is.
            const action = powerAction(job);
            if (action !== 'off') await this.newBoot(lease().id);
            await power()[action](signal);
            this.d.events.add(board().id, { type: 'power', message: `power ${action} by ${job.params.by ?? 'tenant'}` });
            return;
          }
          this.d.console?.leaseStarted(board().id, lease().id);
          await cycle(signal);
        },
      },
      dhcp: {
        timeoutMs: t.bootMs,
        beforeRetry: cycle,
        run: async (signal) => {
          await waitForBoardEvent(this.d.events, board().id, (e) => e.type === 'dhcp' && e.details?.kind === 'ack', bootStart, signal);
        },
      },
      kernel: {
        timeoutMs: t.bootMs,
        beforeRetry: cycle,
        run: async (signal) => {
          const img = await image();
          const kernel = `images/${img.name}/${img.manifest.arches[board().arch]?.kernel}`;
          await waitForBoardEvent(this.d.events, board().id, (e) => e.type === 'tftp' && e.details?.path === kernel, bootStart, signal);
        },
      },
      root: {
        timeoutMs: t.osMs,
        beforeRetry: cycle,
        run: (signal) => this.d.signals.wait(lease().id, ['metadata', 'phone-home'], bootStart, signal),
      },
      'phone-home': {
        timeoutMs: t.osMs,
        beforeRetry: cycle,
        run: (signal) => this.d.signals.wait(lease().id, ['phone-home'], bootStart, signal),
      },
      console: {
        timeoutMs: t.actionMs,
        run: async () => {
          if (!this.d.console) return 'skipped';
          await this.d.console.leaseEnded(board().id, lease().id);
        },
      },
      board: {
        timeoutMs: t.actionMs,
        run: async () => {
          await this.d.store.update((s) => {
            const b = s.boards.find((x) => x.id === lease().boardId)!;
            if (b.state !== 'available') applyTransition(s, b.id, 'available', `lease ${lease().id} released`);
          });
        },
      },
    };
    return stepList(steps);
  }

  private containerSteps(job: Job, lease: () => Lease): StepImpl[] {
    const c = () => {
      if (!this.d.containers) throw new Error('no container hosts are configured');
      return this.d.containers;
    };
    const steps: StepImpls<ContainerStep> = {
      container: {
        timeoutMs: this.t.bootMs,
        run: async () => {
          if (job.kind === 'release') return c().release(lease());
          const rec =
            job.kind === 'provision'
              ? await c().create(lease(), { memoryMb: Number(job.params.memoryMb ?? 256), cpus: Number(job.params.cpus ?? 1) })
              : await c().reimage(lease());
          await this.d.store.update((s) => {
            s.leases.find((l) => l.id === lease().id)!.container = rec;
          });
          this.d.console?.leaseStarted(consoleIdOf(lease()), lease().id);
        },
      },
      console: {
        timeoutMs: this.t.actionMs,
        run: async () => {
          if (!this.d.console) return 'skipped';
          await this.d.console.leaseEnded(consoleIdOf(lease()), lease().id);
        },
      },
      // Power jobs only.
      power: {
        timeoutMs: this.t.actionMs,
        run: () => c().power(lease(), powerAction(job)),
      },
    };
    return stepList(steps);
  }

  private publishLease(lease: Lease): void {
    this.d.bus.publish({ type: 'lease', tenantId: lease.tenantId, data: publicLease(lease) });
  }
}

export type PowerAction = 'on' | 'off' | 'cycle';

/** A power job's action (params.action), checked: a job read back from the state file is data. */
function powerAction(job: Job): PowerAction {
  const a = job.params.action;
  if (a !== 'on' && a !== 'off' && a !== 'cycle') throw new Error(`power job ${job.id} has no valid action (params.action: ${JSON.stringify(a)})`);
  return a;
}

/**
 * A shared board's engine lease changes only through the board's role (src/shared-boards), which first
 * checks that no container runs there: not through the lease API, not even an admin's.
 */
function refuseEngineLease(lease: Lease, what: string): void {
  if (lease.purpose === 'engine') {
    throw new ConflictError(`lease ${lease.id} is shared board ${lease.boardId}'s engine: it is ${what} only by giving the board back (dozen boards set ${lease.boardId} --role whole)`);
  }
}

/** A new lease and its first job into the state (inside the allocating update); copies for the caller. */
function recordNew(s: State, lease: Lease, job: Job): { lease: Lease; job: Job } {
  lease.jobId = job.id;
  s.leases.push(lease);
  s.jobs.push(job);
  return { lease: structuredClone(lease), job: structuredClone(job) };
}

/** A lease as the API shows it: CHAP secrets stay on the server. */
export function publicLease(l: Lease): Lease {
  const { iscsi, bootToken: _token, consolePasswordHash, volume, ...rest } = structuredClone(l);
  if (consolePasswordHash) Object.assign(rest, { consolePasswordHash: '(hidden)' });
  // The volume's CHAP secrets are the controller's and the board's, never the tenant's.
  if (volume) Object.assign(rest, { volume: { boardId: volume.boardId, iqn: volume.iqn } });
  return iscsi ? { ...rest, iscsi: { ...iscsi, chapSecret: '(hidden)', ...(iscsi.targetSecret ? { targetSecret: '(hidden)' } : {}) } } : rest;
}

/** The board filters of a lease request: board, model (its aliases too) and arch. */
function matches(b: Board, input: CreateLease): boolean {
  const model = input.model && (findModel(input.model)?.id ?? input.model);
  return (!input.board || b.id === input.board) && (!model || modelFor(b).id === model) && (!input.arch || b.arch === input.arch);
}

const fits = (b: Board, image: Image) => !('error' in fitImage(image.name, image.manifest, modelFor(b)));

/** The first available board that matches, can boot the image, and whose port is fenced (an unfenced one would be on the boot network open). */
function pickBoard(s: State, input: CreateLease, image: Image, fenced: (id: string) => boolean): Board | undefined {
  return s.boards.filter((b) => b.state === 'available' && b.role !== 'shared' && matches(b, input) && fits(b, image) && fenced(b.id)).sort((a, b) => a.id.localeCompare(b.id))[0];
}

function noBoardReason(s: State, input: CreateLease, image: Image, fenced: (id: string) => boolean): string {
  const matching = s.boards.filter((b) => matches(b, input));
  const want = [input.board && `board ${input.board}`, input.model && `model ${input.model}`, input.arch && `arch ${input.arch}`, `image ${image.name}`].filter(Boolean).join(', ');
  if (!matching.length) return `no board matches ${want}`;
  const cands = matching.filter((b) => fits(b, image));
  if (!cands.length) {
    // Name the image and each model it cannot boot, once per model.
    const byModel = new Map(matching.map((b) => [modelFor(b).id, b] as const));
    const why = [...byModel.values()].map((b) => `${(fitImage(image.name, image.manifest, modelFor(b)) as { error: string }).error} (board ${b.id})`);
    return why.join('; ');
  }
  const why = (b: Board) =>
    b.role === 'shared' ? `${b.id} is a shared board (containers)` : b.state === 'available' && !fenced(b.id) ? `${b.id} has no fenced network port (see GET /v1/network)` : `${b.id} is ${b.state}`;
  return `no free board for ${want}: ${cands.map(why).join(', ')}`;
}

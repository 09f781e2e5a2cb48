import { PassThrough } from 'node:stream';
import type Docker from 'dockerode';
import { log as rootLog, type Logger } from '../log.js';
import { BadRequestError, ConflictError, HttpError, NotFoundError } from '../util/errors.js';
import { ContainerConsole } from './console.js';
import { EngineError, HostUnavailableError, QuotaUnenforceableError } from './errors.js';
import type { ContainerHost } from './host.js';
import { ensureImage, type ContainerImageSource } from './images.js';
import { KeyedMutex } from './mutex.js';
import { ensureTenantNetwork, removeTenantNetworkIfUnused, tenantNetworkName, tenantNetworks, type OutboundPolicy } from './network.js';
import { choosePlacement, type PlacementCandidate } from './placement.js';
import { waitForConsoleMarker, waitForSshBanner } from './ready.js';
import type { ContainerPool } from './pool.js';
import { tar } from './tar.js';
import {
  containerLeaseSpecSchema,
  LABEL,
  type ContainerLease,
  type ContainerLeaseSpec,
  type ContainerLeaseStatus,
  type ContainerPowerAction,
  type DiskQuota,
  type DiskQuotaPolicy,
  type ReconcileResult,
  type RecordedContainerLease,
} from './types.js';

const MiB = 1024 * 1024;
const SSH = '22/tcp';

/** What sshd and a login shell need inside a container lease (everything else is dropped). */
const SSH_CAPABILITIES = ['CHOWN', 'DAC_OVERRIDE', 'FOWNER', 'SETUID', 'SETGID', 'SYS_CHROOT', 'NET_BIND_SERVICE', 'KILL', 'AUDIT_WRITE'];

export interface ContainerLeaseDriverOptions {
  pool: ContainerPool;
  /** Images the driver may import into a board that lacks them (no registry needed). */
  images?: ContainerImageSource[];
  /** Max processes+threads per container (cgroup pids). */
  pidsLimit?: number;
  /** Outbound traffic from tenant networks: `deny` = internal network (then no SSH port either). */
  outbound?: OutboundPolicy;
  /** Root filesystem quota when a spec gives none; null: ask for none. */
  diskMb?: number | null;
  /**
   * `require` (default): a lease that asks for a disk quota goes only to a board that enforces one, and
   * is refused when none can. `best-effort`: such a lease may land where no quota holds (inspect says so).
   */
  diskQuota?: DiskQuotaPolicy;
  /** Seconds `power off` waits for the container's init before SIGKILL. */
  stopTimeoutS?: number;
  /** Recreate a down board's leases elsewhere (failover.ts reads this). */
  failover?: boolean;
  logger?: Logger;
}

export interface ExecResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/**
 * Container leases on the shared pool: the lease API's create / reimage / power / release / console,
 * with a Docker container (plus the tenant's bridge network) in place of a board.
 * Docker itself is the record of what runs where (labels on each container); the in-memory index
 * only saves lookups. The lease layer stores what create/reimage/recreate return.
 */
export class ContainerLeaseDriver {
  readonly pool: ContainerPool;
  readonly failover: boolean;
  readonly outbound: OutboundPolicy;
  private readonly images: ContainerImageSource[];
  private readonly pidsLimit: number;
  private readonly diskMb: number | null;
  private readonly diskQuota: DiskQuotaPolicy;
  private readonly stopTimeoutS: number;
  private readonly log: Logger;
  private readonly index = new Map<string, ContainerLease>();
  private readonly mutex = new KeyedMutex();

  constructor(opts: ContainerLeaseDriverOptions) {
    this.pool = opts.pool;
    this.images = opts.images ?? [];
    this.pidsLimit = opts.pidsLimit ?? 256;
    this.outbound = opts.outbound ?? 'allow';
    this.diskMb = opts.diskMb === undefined ? 2048 : opts.diskMb;
    this.diskQuota = opts.diskQuota ?? 'require';
    this.stopTimeoutS = opts.stopTimeoutS ?? 5;
    this.failover = opts.failover ?? false;
    this.log = (opts.logger ?? rootLog).child({ component: 'containers' });
  }

  /** Places the lease on the board with the most free memory and starts it. 409 when nothing fits. */
  async create(input: ContainerLeaseSpec): Promise<ContainerLease> {
    const spec = parseSpec(input);
    return this.mutex.run(`lease:${spec.leaseId}`, async () => {
      const existing = await this.find(spec.leaseId);
      if (existing) throw new ConflictError(`container lease ${spec.leaseId} already exists on ${existing.hostId}`);
      return this.place(spec, []);
    });
  }

  /** A fresh container from the lease's image on the same board: the tenant's changes are gone. */
  async reimage(leaseId: string): Promise<ContainerLease> {
    return this.mutex.run(`lease:${leaseId}`, async () => {
      const lease = await this.locate(leaseId);
      const host = this.usableHost(lease.hostId);
      await this.removeContainer(host, lease);
      const created = await this.mutex.run(`place`, () => this.createOn(host, lease.spec, lease.sshPort));
      return this.start(host, created);
    });
  }

  async power(leaseId: string, action: ContainerPowerAction): Promise<void> {
    await this.mutex.run(`lease:${leaseId}`, async () => {
      const lease = await this.locate(leaseId);
      const host = this.usableHost(lease.hostId);
      const t = this.stopTimeoutS;
      const what = { on: 'start', off: 'stop', cycle: 'restart' }[action];
      await host.call(
        `${what} container lease ${leaseId}`,
        async (d) => {
          const c = d.getContainer(lease.containerId);
          try {
            if (action === 'on') await c.start();
            else if (action === 'off') await c.stop({ t });
            else await c.restart({ t });
          } catch (err) {
            // 304: already in the asked state.
            if ((err as { statusCode?: number }).statusCode !== 304) throw err;
          }
        },
        `container of lease ${leaseId} on ${host.id}`,
        host.client((t + 30) * 1000),
      );
    });
  }

  /** Removes the container and, when the tenant has nothing else on that board, its network. Idempotent. */
  async release(leaseId: string): Promise<void> {
    await this.mutex.run(`lease:${leaseId}`, async () => {
      const lease = await this.find(leaseId);
      if (!lease) return;
      const host = this.pool.get(lease.hostId);
      await this.removeContainer(host, lease);
      this.index.delete(leaseId);
      await this.mutex.run(`net:${host.id}:${lease.tenantId}`, () => removeTenantNetworkIfUnused(host, lease.tenantId));
    });
  }

  async inspect(leaseId: string): Promise<ContainerLeaseStatus> {
    const lease = await this.locate(leaseId);
    const host = this.pool.get(lease.hostId);
    const c = await host.call(
      `inspect container lease ${leaseId}`,
      (d) => d.getContainer(lease.containerId).inspect(),
      `container of lease ${leaseId} on ${host.id}`,
    );
    const labels = c.Config.Labels ?? {};
    const net = c.NetworkSettings.Networks?.[lease.network];
    const startedAt = validTime(c.State.StartedAt);
    const oomEvents = startedAt ? await this.oomEventsSince(host, c.Id, startedAt) : 0;
    const hc = c.HostConfig;
    return {
      leaseId,
      tenantId: lease.tenantId,
      hostId: host.id,
      containerId: c.Id,
      image: c.Config.Image,
      platform: labels[LABEL.platform] ?? null,
      state: c.State.Status,
      power: c.State.Running ? 'on' : 'off',
      startedAt,
      finishedAt: validTime(c.State.FinishedAt),
      exitCode: c.State.Running ? null : c.State.ExitCode,
      oomKilled: c.State.OOMKilled || oomEvents > 0,
      oomEvents,
      restartCount: c.RestartCount,
      sshHost: lease.sshHost,
      sshPort: lease.sshPort,
      network: lease.network,
      ip: net?.IPAddress || null,
      outbound: labels[LABEL.outbound] === 'deny' ? 'deny' : 'allow',
      limits: {
        memoryMb: (hc.Memory ?? 0) / MiB,
        memorySwapMb: hc.MemorySwap && hc.MemorySwap > 0 ? hc.MemorySwap / MiB : null,
        cpus: (hc.NanoCpus ?? 0) / 1e9,
        pidsLimit: hc.PidsLimit && hc.PidsLimit > 0 ? hc.PidsLimit : null,
      },
      disk: parseDisk(labels[LABEL.disk]),
    };
  }

  /** The container's TTY. `logs: true` first replays what it printed so far (Docker keeps ~2 MB). */
  async attach(leaseId: string, opts: { logs?: boolean } = {}): Promise<ContainerConsole> {
    const lease = await this.locate(leaseId);
    const host = this.usableHost(lease.hostId);
    const id = lease.containerId;
    const socket = await host.call(
      `attach to the console of lease ${leaseId}`,
      () =>
        host.streams
          .getContainer(id)
          .attach({ stream: true, stdin: true, stdout: true, stderr: true, hijack: true, logs: Boolean(opts.logs) }),
      `container of lease ${leaseId} on ${host.id}`,
    );
    return new ContainerConsole(socket, async (cols, rows) => {
      await host.call(`resize the console of lease ${leaseId}`, (d) => d.getContainer(id).resize({ w: cols, h: rows }));
    });
  }

  /**
   * Resolves when the lease is ready for its tenant: its SSH server greets through the published
   * port (what a tenant connects to), or — with outbound deny, where nothing is published — the
   * console has printed the image's ready marker. Rejects after timeoutMs saying what it waited for.
   */
  async waitReady(leaseId: string, opts: { timeoutMs?: number; marker?: string } = {}): Promise<string> {
    const timeoutMs = opts.timeoutMs ?? 60_000;
    const lease = await this.locate(leaseId);
    const what = `lease ${leaseId} on ${lease.hostId}`;
    if (lease.sshPort !== null) return waitForSshBanner(what, lease.sshHost, lease.sshPort, timeoutMs);
    await waitForConsoleMarker(what, await this.attach(leaseId, { logs: true }), timeoutMs, opts.marker);
    return 'console ready';
  }

  /** Runs a command in the lease's container (operator checks, tests). */
  async exec(leaseId: string, argv: string[], opts: { timeoutMs?: number } = {}): Promise<ExecResult> {
    const lease = await this.locate(leaseId);
    const host = this.usableHost(lease.hostId);
    const timeoutMs = opts.timeoutMs ?? 60_000;
    return host.call(`run ${argv[0]} in lease ${leaseId}`, async () => {
      const exec = await host.streams.getContainer(lease.containerId).exec({ Cmd: argv, AttachStdout: true, AttachStderr: true, Tty: false });
      const stream = (await exec.start({ hijack: true, stdin: false })) as NodeJS.ReadableStream & { destroy(): void };
      const out = new PassThrough();
      const err = new PassThrough();
      const chunks = { out: [] as Buffer[], err: [] as Buffer[] };
      out.on('data', (b: Buffer) => chunks.out.push(b));
      err.on('data', (b: Buffer) => chunks.err.push(b));
      host.streams.modem.demuxStream(stream, out, err);
      let timer: NodeJS.Timeout | undefined;
      try {
        await new Promise<void>((resolve, reject) => {
          timer = setTimeout(() => {
            stream.destroy();
            reject(new Error(`${argv.join(' ')} in lease ${leaseId} did not finish within ${timeoutMs} ms`));
          }, timeoutMs);
          stream.on('end', () => resolve());
          stream.on('close', () => resolve());
          stream.on('error', reject);
        });
      } finally {
        clearTimeout(timer);
      }
      const info = await exec.inspect();
      return { exitCode: info.ExitCode ?? -1, stdout: Buffer.concat(chunks.out).toString(), stderr: Buffer.concat(chunks.err).toString() };
    });
  }

  /**
   * On start (and whenever wanted): containers labeled by us that no record claims are removed,
   * records whose container is gone are reported, tenant networks left empty are removed.
   * A record claims a container when lease, board and container id all match.
   */
  async reconcile(recorded: RecordedContainerLease[]): Promise<ReconcileResult> {
    const result: ReconcileResult = { orphansRemoved: [], missing: [], networksRemoved: [], unreachable: [] };
    for (const r of recorded) if (!this.pool.has(r.hostId)) result.missing.push(r);
    for (const host of this.pool.hosts()) {
      await this.mutex.run('place', async () => {
        let list: Docker.ContainerInfo[];
        try {
          list = await host.ours();
        } catch (err) {
          result.unreachable.push({ hostId: host.id, error: (err as Error).message });
          return;
        }
        const mine = recorded.filter((r) => r.hostId === host.id);
        const claimed = new Set<string>();
        for (const c of list) {
          const leaseId = c.Labels[LABEL.lease]!;
          const rec = mine.find((r) => r.leaseId === leaseId && sameId(r.containerId, c.Id));
          if (rec) {
            claimed.add(c.Id);
            this.index.set(leaseId, leaseFromInfo(host, c, rec.spec));
            continue;
          }
          await host.call(`remove orphan container ${c.Id.slice(0, 12)}`, (d) => d.getContainer(c.Id).remove({ force: true, v: true }));
          if (this.index.get(leaseId)?.containerId === c.Id) this.index.delete(leaseId);
          result.orphansRemoved.push({ hostId: host.id, containerId: c.Id, leaseId });
          this.log.warn({ host: host.id, container: c.Id, lease: leaseId }, 'removed an orphaned container');
        }
        for (const r of mine) if (![...claimed].some((id) => sameId(r.containerId, id))) result.missing.push(r);
        for (const n of await tenantNetworks(host)) {
          if (await this.mutex.run(`net:${host.id}:${n.tenantId}`, () => removeTenantNetworkIfUnused(host, n.tenantId))) {
            result.networksRemoved.push({ hostId: host.id, network: n.name });
          }
        }
      });
    }
    return result;
  }

  /**
   * Creates the recorded lease anew on a usable board other than `exclude` (failover; or a lease
   * reconcile reported missing). The old container is removed when its board still answers.
   */
  async recreate(record: RecordedContainerLease, opts: { exclude?: string[] } = {}): Promise<ContainerLease> {
    return this.mutex.run(`lease:${record.leaseId}`, async () => {
      const spec = record.spec ?? this.index.get(record.leaseId)?.spec;
      if (!spec) throw new BadRequestError(`lease ${record.leaseId}: no spec recorded, cannot recreate it`);
      const exclude = opts.exclude ?? [];
      const oldHost = this.pool.has(record.hostId) ? this.pool.get(record.hostId) : null;
      const old = { containerId: record.containerId, leaseId: record.leaseId } as ContainerLease;
      const movingAway = !oldHost || exclude.includes(record.hostId) || !this.pool.isUsable(record.hostId);
      // Staying on the same board: the old container must go first (same name, same port).
      if (oldHost && !movingAway) await this.removeContainer(oldHost, old);
      const lease = await this.place(spec, exclude);
      // Moving away: best effort, so that a board that comes back never runs a second copy (reconcile
      // removes it otherwise, since no record claims it any more).
      if (oldHost && movingAway) {
        await this.removeContainer(oldHost, old).catch((err) =>
          this.log.warn({ err: (err as Error).message, host: oldHost.id, lease: record.leaseId }, 'old container left for reconcile'),
        );
      }
      return lease;
    });
  }

  /** Where a lease runs, as far as this process knows (create/reimage/reconcile fill it). */
  known(): ContainerLease[] {
    return [...this.index.values()];
  }

  // --- internals ----------------------------------------------------------------------------

  /** Placement and container creation under one lock, so concurrent creates see each other's memory. */
  private async place(spec: ContainerLeaseSpec, exclude: string[]): Promise<ContainerLease> {
    const created = await this.mutex.run('place', async () => {
      const platform = this.images.find((s) => s.ref === spec.image)?.platform ?? null;
      const quota = this.requiresQuota(spec);
      // A board whose quota support was only `try` and failed is marked `no`: placement runs again
      // without it, at most once per board.
      for (let round = 0; ; round++) {
        const candidates = await Promise.all(this.pool.hosts().map((h) => this.candidate(h, exclude, quota)));
        const hostId = choosePlacement(candidates, { memoryMb: spec.memoryMb, cpus: spec.cpus, platform });
        const host = this.pool.get(hostId);
        try {
          return { host, lease: await this.createOn(host, spec, null) };
        } catch (err) {
          if (!(err instanceof QuotaUnenforceableError) || round >= this.pool.hosts().length) throw err;
        }
      }
    });
    return this.start(created.host, created.lease);
  }

  /** True when the lease asks for a disk quota that must hold (policy `require`). */
  private requiresQuota(spec: ContainerLeaseSpec): boolean {
    return this.diskQuota === 'require' && (spec.diskMb ?? this.diskMb) !== null;
  }

  private async candidate(host: ContainerHost, exclude: string[], quota: boolean): Promise<PlacementCandidate> {
    const none = { id: host.id, freeMb: 0, cpus: 0, platforms: [] };
    if (exclude.includes(host.id)) return { ...none, unavailable: 'is being left' };
    const down = this.pool.downReason(host.id);
    if (down) return { ...none, unavailable: down };
    try {
      // One after the other: a dead board then costs one failed call (pool health counts calls).
      const facts = await host.facts();
      if (quota && facts.quota.mode === 'no') return { ...none, unavailable: `cannot enforce a disk quota (${facts.quota.detail})` };
      const freeMb = await host.freeMemoryMb();
      return { id: host.id, unavailable: null, freeMb, cpus: facts.cpus, platforms: facts.platforms };
    } catch (err) {
      const why = err instanceof HostUnavailableError ? `is unreachable (${err.reason})` : `failed (${(err as Error).message})`;
      return { ...none, unavailable: why };
    }
  }

  /** Docker's `oom` events for the container since `since` (ISO time); the engine keeps the last 256 events. */
  private async oomEventsSince(host: ContainerHost, containerId: string, since: string): Promise<number> {
    const from = Math.floor(Date.parse(since) / 1000);
    const until = Math.max(from, Math.ceil(Date.now() / 1000));
    return host.call('read oom events', async (d) => {
      const stream = await d.getEvents({ since: from, until, filters: { container: [containerId], event: ['oom'] } });
      let text = '';
      for await (const chunk of stream) text += chunk.toString();
      return text.split('\n').filter((l) => l.includes('"oom"')).length;
    });
  }

  /** Creates (not starts) the container: image, tenant network, limits, labels, authorized_keys. */
  private async createOn(host: ContainerHost, spec: ContainerLeaseSpec, wantPort: number | null): Promise<ContainerLease> {
    const platform = await ensureImage(host, spec.image, this.images);
    const facts = await host.facts();
    if (!facts.platforms.includes(platform)) {
      throw new ConflictError(`image ${spec.image} is ${platform}, shared board ${host.id} runs ${facts.platforms.join(', ')}`);
    }
    return this.mutex.run(`net:${host.id}:${spec.tenantId}`, async () => {
      const network = await ensureTenantNetwork(host, spec.tenantId, this.outbound);
      const sshPort = this.outbound === 'allow' ? (wantPort ?? (await this.freePort(host))) : null;
      const diskMb = spec.diskMb ?? this.diskMb;
      let container: Docker.Container;
      let disk: DiskQuota;
      const attempt = (quota: boolean, detail: string) => {
        disk = { quotaMb: diskMb, enforced: quota, detail };
        return host.call(`create the container of lease ${spec.leaseId}`, (d) =>
          d.createContainer(this.containerBody(host, spec, { network, sshPort, platform, disk, quota })),
        );
      };
      const required = this.requiresQuota(spec);
      if (diskMb === null) {
        container = await attempt(false, 'no quota asked');
      } else if (facts.quota.mode === 'no') {
        if (required) throw new QuotaUnenforceableError(host.id, facts.quota.detail);
        container = await attempt(false, facts.quota.detail);
      } else {
        try {
          container = await attempt(true, facts.quota.detail);
        } catch (err) {
          if (!(err instanceof EngineError) || !/storage-?opt|quota|size/i.test(err.message)) throw err;
          const reason = `${facts.storageDriver} on ${facts.backingFs ?? 'unknown fs'}: ${err.message.replace(/^.*could not [^:]*: /, '')}`;
          host.noteQuotaUnsupported(reason);
          if (required) throw new QuotaUnenforceableError(host.id, reason);
          this.log.warn({ host: host.id, reason }, 'disk quota unsupported on this board; creating without (policy best-effort)');
          container = await attempt(false, reason);
        }
      }
      const lease: ContainerLease = {
        leaseId: spec.leaseId,
        tenantId: spec.tenantId,
        hostId: host.id,
        containerId: container.id,
        sshHost: host.sshHost,
        sshPort,
        network,
        spec,
      };
      try {
        await this.installKeys(host, lease);
      } catch (err) {
        await this.removeContainer(host, lease).catch(() => {});
        throw err;
      }
      return lease;
    });
  }

  private containerBody(
    host: ContainerHost,
    spec: ContainerLeaseSpec,
    o: { network: string; sshPort: number | null; platform: string; disk: DiskQuota; quota: boolean },
  ): Docker.ContainerCreateOptions {
    const bytes = spec.memoryMb * MiB;
    return {
      name: containerName(spec.leaseId),
      Image: spec.image,
      Hostname: spec.hostname,
      // The console is the container's TTY, like a board's serial line.
      Tty: true,
      OpenStdin: true,
      StdinOnce: false,
      Labels: {
        [LABEL.lease]: spec.leaseId,
        [LABEL.tenant]: spec.tenantId,
        [LABEL.host]: host.id,
        [LABEL.memoryMb]: String(spec.memoryMb),
        [LABEL.spec]: JSON.stringify(spec),
        [LABEL.disk]: JSON.stringify(o.disk),
        [LABEL.platform]: o.platform,
        [LABEL.outbound]: this.outbound,
        ...(o.sshPort ? { [LABEL.sshPort]: String(o.sshPort) } : {}),
      },
      ExposedPorts: { [SSH]: {} },
      StopTimeout: this.stopTimeoutS,
      HostConfig: {
        Memory: bytes,
        // Memory + swap = memory: no swap on top of the limit.
        MemorySwap: bytes,
        NanoCpus: Math.round(spec.cpus * 1e9),
        PidsLimit: this.pidsLimit,
        ...(o.quota && o.disk.quotaMb ? { StorageOpt: { size: `${o.disk.quotaMb}M` } } : {}),
        NetworkMode: o.network,
        PortBindings: o.sshPort ? { [SSH]: [{ HostIp: host.config.publishIp, HostPort: String(o.sshPort) }] } : {},
        // Root in the container, not on the board: every capability dropped but what an SSH login needs
        // (no NET_RAW: no crafted packets with another tenant's address; no MKNOD, SETFCAP, SETPCAP),
        // and no gaining privileges through setuid binaries.
        CapDrop: ['ALL'],
        CapAdd: SSH_CAPABILITIES,
        SecurityOpt: ['no-new-privileges:true'],
        // The image's init keeps its run state (a fifo) here: in memory, so a tenant who fills its
        // disk quota cannot stop its own container from starting again.
        Tmpfs: { '/run': 'rw,nosuid,nodev,noexec,size=1m,mode=755' },
        // A lease that was on stays on across engine restarts; one powered off stays off.
        RestartPolicy: { Name: 'unless-stopped' },
        // The console log Docker keeps: bounded.
        LogConfig: { Type: 'json-file', Config: { 'max-size': '1m', 'max-file': '2' } },
      },
    };
  }

  /** The lowest port of the board's range that none of our containers holds. */
  private async freePort(host: ContainerHost, skip: Set<number> = new Set()): Promise<number> {
    const used = new Set((await host.ours()).map((c) => Number(c.Labels[LABEL.sshPort])).filter(Boolean));
    const [lo, hi] = host.config.sshPortRange;
    for (let p = lo; p <= hi; p++) if (!used.has(p) && !skip.has(p)) return p;
    throw new ConflictError(`shared board ${host.id} has no free SSH port in ${lo}-${hi}`);
  }

  private async installKeys(host: ContainerHost, lease: ContainerLease): Promise<void> {
    const keys = lease.spec.sshKeys.map((k) => k.trim()).join('\n');
    const archive = tar([
      { path: 'root', mode: 0o700 },
      { path: 'root/.ssh', mode: 0o700 },
      { path: 'root/.ssh/authorized_keys', mode: 0o600, content: keys ? keys + '\n' : '' },
    ]);
    await host.call(`write authorized_keys for lease ${lease.leaseId}`, (d) =>
      d.getContainer(lease.containerId).putArchive(archive, { path: '/' }),
    );
  }

  /** Starts a created container; a port someone else took meanwhile gets the next free one (bounded). */
  private async start(host: ContainerHost, lease: ContainerLease): Promise<ContainerLease> {
    const tried = new Set<number>();
    let current = lease;
    for (let attempt = 0; ; attempt++) {
      try {
        await host.call(`start container lease ${lease.leaseId}`, (d) => d.getContainer(current.containerId).start());
        this.index.set(current.leaseId, current);
        this.log.info({ lease: current.leaseId, host: host.id, container: current.containerId, sshPort: current.sshPort }, 'container lease started');
        return current;
      } catch (err) {
        const portTaken = /port is already allocated|address already in use/i.test((err as Error).message);
        await this.removeContainer(host, current).catch(() => {});
        if (!portTaken || current.sshPort === null || attempt >= 4) throw err;
        tried.add(current.sshPort);
        const port = await this.freePort(host, tried);
        current = await this.mutex.run('place', () => this.createOn(host, current.spec, port));
      }
    }
  }

  private async removeContainer(host: ContainerHost, lease: Pick<ContainerLease, 'containerId' | 'leaseId'>): Promise<void> {
    try {
      await host.call(`remove the container of lease ${lease.leaseId}`, (d) =>
        d.getContainer(lease.containerId).remove({ force: true, v: true }),
      );
    } catch (err) {
      if ((err as { status?: number }).status === 502 && /no such container/i.test((err as Error).message)) return;
      throw err;
    }
  }

  /** A lease's board, or 503 naming it when it is marked down / failing health checks. */
  private usableHost(hostId: string): ContainerHost {
    const host = this.pool.get(hostId);
    const down = this.pool.downReason(hostId);
    if (down) throw new HostUnavailableError(hostId, `shared board ${host.describe()} ${down}`, down);
    return host;
  }

  private async locate(leaseId: string): Promise<ContainerLease> {
    const lease = await this.find(leaseId);
    if (!lease) throw new NotFoundError(`container lease ${leaseId}`);
    return lease;
  }

  /** The index, else every usable board asked by label (after a restart, before reconcile). */
  private async find(leaseId: string): Promise<ContainerLease | undefined> {
    const known = this.index.get(leaseId);
    if (known) return known;
    const found = await Promise.all(
      this.pool
        .hosts()
        .filter((h) => this.pool.isUsable(h.id))
        .map(async (h) => {
          const list = await h
            .call('list containers', (d) => d.listContainers({ all: true, filters: { label: [`${LABEL.lease}=${leaseId}`] } }))
            .catch(() => []);
          return list[0] ? leaseFromInfo(h, list[0]) : undefined;
        }),
    );
    const lease = found.find(Boolean);
    if (lease) this.index.set(leaseId, lease);
    return lease;
  }
}

function parseSpec(input: ContainerLeaseSpec): ContainerLeaseSpec {
  const r = containerLeaseSpecSchema.safeParse(input);
  if (!r.success) {
    const fields = r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
    throw new BadRequestError(`invalid container lease: ${fields.join('; ')}`, r.error.issues);
  }
  return r.data;
}

export function containerName(leaseId: string): string {
  return `dozen-${leaseId}`;
}

function leaseFromInfo(host: ContainerHost, c: Docker.ContainerInfo, spec?: ContainerLeaseSpec): ContainerLease {
  const labels = c.Labels;
  const s = spec ?? (JSON.parse(labels[LABEL.spec] ?? 'null') as ContainerLeaseSpec | null);
  if (!s) throw new HttpError(500, `container ${c.Id.slice(0, 12)} on ${host.id} has no ${LABEL.spec} label`);
  const port = Number(labels[LABEL.sshPort]);
  return {
    leaseId: labels[LABEL.lease]!,
    tenantId: labels[LABEL.tenant] ?? s.tenantId,
    hostId: host.id,
    containerId: c.Id,
    sshHost: host.sshHost,
    sshPort: port > 0 ? port : null,
    network: tenantNetworkName(labels[LABEL.tenant] ?? s.tenantId),
    spec: s,
  };
}

function sameId(a: string, b: string): boolean {
  return a.length > 0 && b.length > 0 && (a.startsWith(b) || b.startsWith(a));
}

function validTime(t: string | undefined): string | null {
  return t && !t.startsWith('0001-') ? t : null;
}

function parseDisk(label: string | undefined): DiskQuota {
  try {
    return JSON.parse(label ?? '') as DiskQuota;
  } catch {
    return { quotaMb: null, enforced: false, detail: 'unknown (container not created by this version)' };
  }
}

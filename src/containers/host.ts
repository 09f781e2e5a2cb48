import { readFileSync } from 'node:fs';
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import Docker from 'dockerode';
import { z } from 'zod';
import { HostUnavailableError, mapEngineError } from './errors.js';
import { LABEL, type Platform } from './types.js';

const MiB = 1024 * 1024;

export const containerHostConfigSchema = z
  .object({
    /** The shared board's id (names it in messages and placement reasons), e.g. bpi-s1. */
    id: z.string().regex(/^[a-z0-9][a-z0-9-]{0,31}$/, 'lower-case letters, digits and dashes'),
    /** A local engine: its unix socket. */
    socketPath: z.string().min(1).optional(),
    /** A remote engine: TCP + TLS (client certificate), Docker's convention is port 2376. */
    host: z.string().min(1).optional(),
    port: z.number().int().min(1).max(65535).default(2376),
    /** PEM text, or a path to a PEM file. Required with `host` (we never talk to an engine in clear). */
    ca: z.string().optional(),
    cert: z.string().optional(),
    key: z.string().optional(),
    /** Where tenants reach the published SSH ports; default `host`, or 127.0.0.1 for a socket. */
    sshHost: z.string().min(1).optional(),
    /** Host address the SSH ports bind to. */
    publishIp: z.string().default('0.0.0.0'),
    /** Platforms this engine runs; default: the engine's own architecture (`docker info`). */
    platforms: z.array(z.string().regex(/^linux\/[a-z0-9]+(\/v\d+)?$/)).min(1).optional(),
    /** Memory to hand out, overriding `docker info`'s total. */
    memoryMb: z.number().int().positive().optional(),
    /** Memory kept for the board's OS and the engine itself. */
    reserveMb: z.number().int().min(0).default(128),
    /** Host ports for tenants' SSH; each lease keeps its port across power cycles and reimages. */
    sshPortRange: z.tuple([z.number().int().min(1), z.number().int().max(65535)]).default([22000, 22999]),
    /** Idle timeout of one Docker API call. */
    timeoutMs: z.number().int().positive().default(30_000),
  })
  .refine((c) => Boolean(c.socketPath) !== Boolean(c.host), { message: 'give exactly one of socketPath or host' })
  .refine((c) => !c.host || (c.ca && c.cert && c.key), { message: 'a TCP engine needs ca, cert and key (TLS)' });
export type ContainerHostConfig = z.input<typeof containerHostConfigSchema>;

/** How the board's storage driver limits a container's root filesystem. */
export interface QuotaSupport {
  /** `yes`: StorageOpt size works; `try`: may work (overlay2 on xfs needs pquota); `no`. */
  mode: 'yes' | 'try' | 'no';
  detail: string;
}

export interface HostFacts {
  engineVersion: string;
  architecture: string;
  platforms: Platform[];
  /** Memory the engine reports (or the configured override), before the reserve. */
  memoryMb: number;
  cpus: number;
  storageDriver: string;
  backingFs: string | null;
  quota: QuotaSupport;
  /** The engine runs every container in a user namespace (`dockerd --userns-remap`): root inside is not root on the board. */
  userns: boolean;
}

export interface HostUsage {
  /** Sum of the memory limits of our containers, running or not (a stopped lease keeps its share). */
  usedMemoryMb: number;
  containers: number;
}

/** `docker info`'s Architecture → Docker platform. */
export function platformOfArch(arch: string): Platform {
  const map: Record<string, Platform> = {
    x86_64: 'linux/amd64',
    aarch64: 'linux/arm64',
    arm64: 'linux/arm64',
    armv7l: 'linux/arm/v7',
    armv6l: 'linux/arm/v6',
  };
  return map[arch] ?? `linux/${arch}`;
}

/** What the storage driver can do for per-container disk quotas (docs: `docker run --storage-opt size`). */
export function quotaSupport(driver: string, backingFs: string | null): QuotaSupport {
  if (driver === 'btrfs') return { mode: 'yes', detail: 'btrfs subvolume qgroup (StorageOpt size)' };
  if (driver === 'zfs') return { mode: 'yes', detail: 'zfs dataset quota (StorageOpt size)' };
  if (driver === 'devicemapper') return { mode: 'yes', detail: 'devicemapper thin device size (StorageOpt size)' };
  if (driver === 'overlay2' && backingFs === 'xfs') {
    return { mode: 'try', detail: 'overlay2 on xfs: project quota (StorageOpt size), if mounted with pquota' };
  }
  return {
    mode: 'no',
    detail: `${driver} on ${backingFs ?? 'unknown fs'} has no per-container quota (needs overlay2 on xfs with pquota, btrfs or zfs)`,
  };
}

function pem(v: string | undefined): string | undefined {
  if (v === undefined) return undefined;
  return v.includes('-----BEGIN') ? v : readFileSync(v, 'utf8');
}

/**
 * One shared board's Docker engine, reached by either kind in CONTAINER_HOSTS (hosts.ts: `containerHost(config)`
 * picks it). The driver's interface to a board: the pool, placement and every lease operation take this class.
 */
export class ContainerHost {
  readonly id: string;
  readonly config: z.output<typeof containerHostConfigSchema>;
  /** For ordinary API calls: an idle timeout (config timeoutMs). */
  readonly docker: Docker;
  /** For long or streaming calls (attach, import, exec output): no idle timeout. */
  readonly streams: Docker;
  private factsCache?: HostFacts;
  private readonly base: Docker.DockerOptions;
  private readonly clients = new Map<number, Docker>();

  constructor(config: ContainerHostConfig) {
    this.config = containerHostConfigSchema.parse(config);
    this.id = this.config.id;
    const c = this.config;
    // No keep-alive (Node 20's default agent keeps sockets): after an engine restart the first call
    // would go out on a dead pooled socket and fail with ECONNRESET although the engine is back.
    // (`agent` is a docker-modem option missing from @types/dockerode.)
    const base: Docker.DockerOptions & { agent: HttpAgent } = c.socketPath
      ? { socketPath: c.socketPath, agent: new HttpAgent({ keepAlive: false }) }
      : { host: c.host, port: c.port, protocol: 'https', ca: pem(c.ca), cert: pem(c.cert), key: pem(c.key), agent: new HttpsAgent({ keepAlive: false }) };
    // Not docker-modem's connectionTimeout: it runs until the response starts, so it would cut off a
    // `stop` that legitimately waits for the container. The idle timeout covers dead peers too.
    this.base = base;
    this.docker = new Docker({ ...base, timeout: c.timeoutMs });
    this.streams = new Docker(base);
  }

  /** A client whose idle timeout fits a call that may take up to `ms` (stop/restart wait for the container). */
  client(ms: number): Docker {
    let d = this.clients.get(ms);
    if (!d) this.clients.set(ms, (d = new Docker({ ...this.base, timeout: Math.max(ms, this.config.timeoutMs) })));
    return d;
  }

  /** e.g. `bpi-s1 (tcp://10.0.0.5:2376)`: what error messages name. */
  describe(): string {
    const c = this.config;
    return `${this.id} (${c.socketPath ? `unix://${c.socketPath}` : `tcp://${c.host}:${c.port}`})`;
  }

  get sshHost(): string {
    return this.config.sshHost ?? this.config.host ?? '127.0.0.1';
  }

  /** Runs one Docker call; failures come back naming this board (errors.ts). */
  async call<T>(what: string, fn: (docker: Docker) => Promise<T>, notFound?: string, docker = this.docker): Promise<T> {
    try {
      const result = await fn(docker);
      this.onReachability?.(null);
      return result;
    } catch (err) {
      const mapped = mapEngineError(this.id, this.describe(), what, err, notFound);
      // Docker answering "no" still proves the engine is there.
      this.onReachability?.(mapped instanceof HostUnavailableError ? mapped : null);
      throw mapped;
    }
  }

  /** Set by the pool: every call tells it whether the engine answered (null) or not (the error). */
  onReachability?: (err: HostUnavailableError | null) => void;

  /** Resolves when the engine answers `_ping` within timeoutMs. */
  async ping(timeoutMs = 3_000): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(Object.assign(new Error(`no answer to ping within ${timeoutMs} ms`), { code: 'ETIMEDOUT' })), timeoutMs);
    });
    try {
      await this.call('ping', (d) => Promise.race([d.ping(), timeout]));
    } finally {
      clearTimeout(timer);
    }
  }

  /** Capacity and abilities from `docker info` (cached; `refresh` asks again). */
  async facts(refresh = false): Promise<HostFacts> {
    if (this.factsCache && !refresh) return this.factsCache;
    const info = await this.call('read docker info', (d) => d.info());
    const status = new Map<string, string>((info.DriverStatus ?? []) as Array<[string, string]>);
    const backingFs = status.get('Backing Filesystem') ?? null;
    const facts: HostFacts = {
      engineVersion: String(info.ServerVersion),
      architecture: String(info.Architecture),
      platforms: this.config.platforms ?? [platformOfArch(String(info.Architecture))],
      memoryMb: this.config.memoryMb ?? Math.floor(Number(info.MemTotal) / MiB),
      cpus: Number(info.NCPU),
      storageDriver: String(info.Driver),
      backingFs,
      quota: quotaSupport(String(info.Driver), backingFs),
      userns: ((info.SecurityOptions ?? []) as string[]).some((o) => o.startsWith('name=userns')),
    };
    this.factsCache = facts;
    return facts;
  }

  /** Remembers that StorageOpt size failed here, so later leases don't try again. */
  noteQuotaUnsupported(reason: string): void {
    if (this.factsCache) this.factsCache.quota = { mode: 'no', detail: reason };
  }

  /** Our containers on this engine (label dozen.lease), running or not. */
  async ours(): Promise<Docker.ContainerInfo[]> {
    return this.call('list containers', (d) => d.listContainers({ all: true, filters: { label: [LABEL.lease] } }));
  }

  async usage(): Promise<HostUsage> {
    const list = await this.ours();
    const usedMemoryMb = list.reduce((sum, c) => sum + (Number(c.Labels[LABEL.memoryMb]) || 0), 0);
    return { usedMemoryMb, containers: list.length };
  }

  /** Memory left for new leases: capacity − reserve − our containers' limits. */
  async freeMemoryMb(): Promise<number> {
    const [facts, usage] = await Promise.all([this.facts(), this.usage()]);
    return facts.memoryMb - this.config.reserveMb - usage.usedMemoryMb;
  }
}

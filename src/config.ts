import { readFileSync } from 'node:fs';
import { resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { inSubnet, ipToInt, parseDhcpSubnet } from './util/net.js';
import { storageConfigSchema } from './storage/config.js';
import { containersConfigSchema } from './containers/config.js';
import { parseLabBoards } from './lab/kinds.js';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

const hostPort = z.string().regex(/^[^:]+:\d{1,5}$/, 'HOST:PORT');

export const configSchema = z
  .object({
    dataDir: z.string().default('data'),
    api: hostPort.default('127.0.0.1:8080'),
    /**
     * The origin browsers use when a reverse proxy in front rewrites Host (https://dozen.example.com): the
     * web UI's cookie-authenticated changes and console sockets must come from it or from the API's own.
     */
    publicOrigin: z
      .string()
      .regex(/^https?:\/\/[A-Za-z0-9.-]+(:\d{1,5})?$/, 'an origin: http(s)://host[:port], no path or trailing slash')
      .optional(),
    /** Address the DHCP and TFTP servers bind to and announce (option 54, siaddr). */
    bootIp: z.ipv4().default('10.77.0.1'),
    /** The boot network the DHCP server serves: refused here as the server would refuse it (parseDhcpSubnet). */
    subnet: z
      .string()
      .superRefine((v, ctx) => {
        try {
          parseDhcpSubnet(v);
        } catch (err) {
          ctx.addIssue({ code: 'custom', message: (err as Error).message });
        }
      })
      .default('10.77.0.0/24'),
    router: z.ipv4().optional(),
    dns: z.array(z.ipv4()).default([]),
    domain: z.string().optional(),
    dhcp: z
      .object({
        port: z.number().int().min(1).max(65534).default(67),
        leaseSeconds: z.number().int().positive().default(3600),
        /** Dynamic addresses for unknown MACs (discovery); off unless set. */
        pool: z.object({ start: z.ipv4(), end: z.ipv4() }).optional(),
        /** Serve on a thread of its own (src/boot/dhcp/thread.ts): only the reservation lookup runs on the main thread. */
        thread: z.boolean().default(true),
      })
      .prefault({}),
    tftp: z
      .object({
        // 0: any free port (a server kept off the boot network, as in tests)
        port: z.number().int().min(0).max(65535).default(69),
        /** What the boot script tells U-Boot to ask for (tftpblocksize, tftpwindowsize). */
        blksize: z.number().int().min(512).max(65464).default(1468),
        windowsize: z.number().int().min(1).max(64).default(16),
        /**
         * Transfers at once; past it a request waits for a slot. A rack's boot storm must fit: U-Boot gives up
         * on a request after ~55 s of retransmits, so 1,000 boards queued behind 64 slots lost a quarter of them
         * (npm run bench -- storm). Each transfer holds ~128 KiB of read-ahead.
         */
        maxTransfers: z.number().int().positive().default(1024),
        /** Per client address; past either bound a request waits for a slot (a slower boot, never a refused one). */
        maxPerClient: z.number().int().positive().default(4),
        /** The largest RFC 2349 timeout (s) a client may choose; larger ones are ignored. */
        maxClientTimeoutS: z.number().int().min(1).max(255).default(5),
        /** Serve on a thread of its own (src/boot/tftp/thread.ts), off the event loop of the API and consoles. */
        thread: z.boolean().default(true),
        /**
         * Memory (MiB) for image files kept whole by the TFTP server (src/boot/tftp/file-cache.ts), on its thread
         * or, with `thread: false`, on the main one: a storm's boards share one copy of each kernel and initrd.
         * Files over a quarter of it, and files changed in the last 2 s, are read per transfer. 0: off.
         */
        fileCacheMb: z.number().int().min(0).max(65536).default(256),
      })
      .prefault({}),
    /** iSCSI root disks for leased boards (src/storage/config.ts). */
    storage: storageConfigSchema.prefault({}),
    /** Docker engines on shared boards, for container leases (src/containers/config.ts). */
    containers: containersConfigSchema.prefault({}),
    /** The metadata service (cloud-init NoCloud) on the boot network, at bootIp:port. */
    metadata: z.object({ port: z.number().int().min(0).max(65535).default(8775) }).prefault({}),
    leases: z
      .object({
        /** Server-side steps (power, disk), boot (power-on to kernel fetch), OS (kernel to phone-home). */
        actionTimeoutMs: z.number().int().positive().default(60_000),
        bootTimeoutMs: z.number().int().positive().default(120_000),
        osTimeoutMs: z.number().int().positive().default(900_000),
        reapIntervalMs: z.number().int().positive().default(30_000),
        /** Finished jobs and released leases stay readable (GET by id, from <dataDir>/history) this long, then are deleted. */
        keepReleasedDays: z.number().positive().default(30),
        /** A released lease, and every finished job but a lease's current one, leave the state file for the history after this long. */
        archiveAfterMs: z.number().int().nonnegative().default(3_600_000),
      })
      .prefault({}),
    /** Where images are found: built-in ones under images/<name>/build, imported ones under <dataDir>/images. */
    imagesDir: z.string().default(resolve(REPO_ROOT, 'images')),
    lab: z
      .object({
        /** Off unless asked for (config or `dozen serve --lab`): a real controller has no emulated boards. `npm start` uses config/lab.json. */
        enabled: z.boolean().default(false),
        /** A number (that many QEMU virt ARMv7 boards) or a mix: `virt:2,bpim2u:2,arm64:1` (src/lab/kinds.ts). */
        boards: z
          .union([z.number().int().min(0).max(16), z.string().max(200)])
          .default(2)
          .refine((b) => { try { parseLabBoards(b); return true; } catch { return false; } }, { message: 'lab.boards: a number up to 16, or <kind>[:<count>],… with kinds virt, arm64, bpim2u' }),
        netns: z.string().regex(/^[a-z0-9-]{1,12}$/).default('dozen-lab'),
        memoryMb: z.number().int().min(128).default(512),
        image: z.string().default('test'),
        /** Power the lab boards on when the server starts (tests attach consoles first, then power on). */
        powerOn: z.boolean().default(true),
      })
      .prefault({}),
    /**
     * How board ports are fenced on the boot network (src/network/registry.ts): `{ driver: 'linux-bridge'
     * | 'command' | 'none', ...its parameters }`. With the lab on and none given: the lab's bridge, fenced.
     * Without the lab it must be chosen: `none` (no isolation) is never a default.
     */
    network: z.looseObject({ driver: z.string().min(1) }).optional(),
    adminToken: z.string().min(16).optional(),
    /**
     * The SSH gateway (src/gateway): `ssh -J <lease>@HOST:PORT root@<board>` and `ssh console+<lease>@HOST`,
     * with the lease's keys. Bind it where tenants reach the controller; port 0 picks a free one (tests).
     */
    gateway: z
      .object({
        enabled: z.boolean().default(true),
        listen: hostPort.default('127.0.0.1:2222'),
        /** Its ed25519 host key, made once (0600); default <dataDir>/ssh-gateway/host_ed25519. */
        hostKey: z.string().optional(),
        maxConnections: z.number().int().positive().default(256),
      })
      .prefault({}),
    /**
     * Prometheus metrics: at the API's `/metrics` for the admin token, or, with `listen` (HOST:PORT), there
     * alone and without a token (a management address the operator chose), and no longer on the API.
     */
    metrics: z.object({ listen: hostPort.optional() }).prefault({}),
    /** Bounds on what one client or tenant can hold (README "Limits"). */
    limits: z
      .object({
        /** Live leases (boards and containers) one tenant may hold at once. */
        leasesPerTenant: z.number().int().positive().default(16),
        /** Open event streams (SSE) per token. */
        eventStreamsPerToken: z.number().int().positive().default(8),
        /** Open console sockets per token. */
        consolesPerToken: z.number().int().positive().default(16),
        /** Power actions (on, off, cycle) one lease may ask for per minute: a relay or PoE port is not a toy. */
        powerCallsPerMinute: z.number().int().positive().default(6),
        /** What one tenant's live container leases may hold together on the shared boards. */
        containerMemoryMbPerTenant: z.number().int().positive().default(8192),
        containerCpusPerTenant: z.number().positive().default(8),
        /** Viewers of one console at once (each join is announced to every viewer). */
        viewersPerConsole: z.number().int().positive().default(32),
        /** A request's headers must arrive within this; a whole request (image uploads too) within requestTimeoutMs. */
        headersTimeoutMs: z.number().int().positive().default(20_000),
        requestTimeoutMs: z.number().int().positive().default(30 * 60_000),
        /** Connections the metadata service holds at once (boards fetch a few small files each). */
        metadataConnections: z.number().int().positive().default(256),
      })
      .prefault({}),
  })
  .superRefine((c, ctx) => {
    if (!c.lab.enabled && !c.network) {
      ctx.addIssue({
        code: 'custom',
        path: ['network'],
        message: 'choose how board ports are fenced: {"driver":"linux-bridge",…} or {"driver":"command",…}; {"driver":"none"} only for one trusted tenant (README "Board isolation")',
      });
    }
    // What the DHCP server refuses at start (src/boot/dhcp/server.ts) is refused here, before anything starts:
    // the subnet itself in its field (reported there), the boot IP and the pool here.
    let subnet;
    try {
      subnet = parseDhcpSubnet(c.subnet);
    } catch {
      return;
    }
    if (!inSubnet(c.bootIp, subnet)) {
      ctx.addIssue({ code: 'custom', path: ['bootIp'], message: `${c.bootIp} is not a host address of ${c.subnet}` });
    }
    const pool = c.dhcp.pool;
    if (pool) {
      // As the server checks it: both ends inside the subnet (its network and broadcast addresses are never leased).
      const inNet = (ip: string) => ((ipToInt(ip) & ipToInt(subnet.mask)) >>> 0) === ipToInt(subnet.network);
      if (ipToInt(pool.start) > ipToInt(pool.end)) {
        ctx.addIssue({ code: 'custom', path: ['dhcp', 'pool'], message: `pool start ${pool.start} is after its end ${pool.end}` });
      } else if (!inNet(pool.start) || !inNet(pool.end)) {
        ctx.addIssue({ code: 'custom', path: ['dhcp', 'pool'], message: `pool ${pool.start}-${pool.end} is not inside subnet ${c.subnet}` });
      }
    }
  });

export type Config = z.infer<typeof configSchema>;

export function loadConfig(file: string | undefined, overrides: Record<string, unknown>): Config {
  let base: Record<string, unknown> = {};
  if (file) {
    try {
      base = JSON.parse(readFileSync(file, 'utf8'));
    } catch (err) {
      throw new Error(`cannot read config ${file}: ${(err as Error).message}`, { cause: err });
    }
  }
  const merged = deepMerge(base, overrides);
  const parsed = configSchema.safeParse(merged);
  if (!parsed.success) throw new Error(`invalid configuration${file ? ` in ${file}` : ''}:\n${z.prettifyError(parsed.error)}`);
  return parsed.data;
}

function deepMerge(a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...a };
  for (const [k, v] of Object.entries(b)) {
    if (v === undefined) continue;
    const cur = out[k];
    out[k] =
      v && typeof v === 'object' && !Array.isArray(v) && cur && typeof cur === 'object' && !Array.isArray(cur)
        ? deepMerge(cur as Record<string, unknown>, v as Record<string, unknown>)
        : v;
  }
  return out;
}

import { z } from 'zod';
import { isMac, normalizeMac } from '../util/net.js';

export const SCHEMA_VERSION = 2;

export const ARCHES = ['armv7', 'arm64'] as const;
export type Arch = (typeof ARCHES)[number];

/** Board lifecycle states (transitions live in inventory/lifecycle.ts). */
export const BOARD_STATES = [
  'enrolled',
  'available',
  'provisioning',
  'active',
  'releasing',
  'maintenance',
  'error',
] as const;
export type BoardState = (typeof BOARD_STATES)[number];

export const macSchema = z
  .string()
  .refine(isMac, { message: 'must be a MAC address like 02:00:00:00:00:01' })
  .transform(normalizeMac);

export const boardIdSchema = z
  .string()
  .regex(/^[a-z0-9][a-z0-9-]{0,31}$/, 'lower-case letters, digits and dashes, at most 32, starting with a letter or digit');

/** Where and how to switch a board's power: the driver name plus that driver's own parameters. */
export const powerSchema = z.looseObject({ driver: z.string().min(1) });
export type PowerSpec = z.infer<typeof powerSchema>;

export const serialSchema = z
  .string()
  .min(1)
  .refine((s) => s.startsWith('/') || /^(tcp|telnet):\/\/[^/:]+:\d+$/.test(s), {
    message: 'a device path (/dev/ttyUSB0), tcp://host:port (raw) or telnet://host:port (ser2net telnet)',
  });

export const boardSchema = z.object({
  id: boardIdSchema,
  mac: macSchema,
  model: z.string().min(1).max(64),
  arch: z.enum(ARCHES),
  ip: z.ipv4(),
  serial: serialSchema.optional(),
  /** Kernel arguments this board's boots add (after the image's and the model's), e.g. maxcpus=1 on an emulated R40. */
  kernelArgs: z
    .string()
    .max(256)
    .regex(/^[A-Za-z0-9_.,=:/ +-]*$/, 'kernel arguments: letters, digits, spaces and _ . , = : / + -')
    .optional(),
  /** Where the board plugs into the boot network: its bridge port (the lab: a tap) or switch port. The network driver fences it. */
  port: z.string().regex(/^[A-Za-z0-9_.:/-]{1,64}$/, 'a port name: 1-64 of A-Z a-z 0-9 _ . : / -').optional(),
  power: powerSchema,
  /** How its boot firmware is verified and restored at every release (src/firmware/); none: unverified. */
  firmware: z.looseObject({ driver: z.string().min(1) }).optional(),
  image: z.string().min(1),
  /**
   * `shared`: the controller holds the board itself and runs tenants' containers on it (a Docker engine
   * booted from the catalog, src/shared-boards). Absent: a whole board, leased to one tenant at a time.
   */
  role: z.enum(['whole', 'shared']).optional(),
  /** Who made it shared: an operator (stays until given back) or the keep-ready policy (given back when idle). */
  sharedBy: z.enum(['operator', 'policy']).optional(),
  state: z.enum(BOARD_STATES),
  stateReason: z.string().optional(),
  createdAt: z.string(),
});
export type Board = z.infer<typeof boardSchema>;

export const discoveredSchema = z.object({
  mac: macSchema,
  firstSeen: z.string(),
  lastSeen: z.string(),
  count: z.number().int().nonnegative(),
  vendorClass: z.string().optional(),
  clientArch: z.number().int().optional(),
});
export type Discovered = z.infer<typeof discoveredSchema>;

export const tenantIdSchema = boardIdSchema;

/** The controller's own tenant: it holds shared boards' engine leases. No API may create or use it. */
export const SYSTEM_TENANT = 'dozen-system';

export const tenantSchema = z.object({
  id: tenantIdSchema,
  name: z.string().min(1).max(128),
  createdAt: z.string(),
});
export type Tenant = z.infer<typeof tenantSchema>;

/** API tokens: only a SHA-256 of the secret is kept; the secret is shown once. tenantId null = admin. */
export const tokenSchema = z.object({
  id: z.string(),
  tenantId: tenantIdSchema.nullable(),
  hash: z.string().regex(/^[0-9a-f]{64}$/),
  createdAt: z.string(),
  expiresAt: z.string().optional(),
  revokedAt: z.string().optional(),
});
export type Token = z.infer<typeof tokenSchema>;

export const LEASE_STATES = ['provisioning', 'active', 'reimaging', 'releasing', 'migrating', 'released', 'error'] as const;
export type LeaseState = (typeof LEASE_STATES)[number];

/** How a leased board reaches its root disk: recorded so targets can be re-created after a tgtd restart. */
export const iscsiRecordSchema = z.object({
  disk: z.string(),
  iqn: z.string(),
  tid: z.number().int().positive(),
  initiator: z.string(),
  /** The board's reserved IP when the target admits that address alone (storage/tgtadm.ts). */
  initiatorAddress: z.ipv4().optional(),
  chapUser: z.string(),
  chapSecret: z.string(),
  /** Mutual CHAP: the target's own account, which the board's initiator checks (absent on older records). */
  targetUser: z.string().optional(),
  targetSecret: z.string().optional(),
  portal: z.string(),
  /** A second, blank disk exported as LUN 2 of the same target (a shared board's Docker data-root), or none. */
  dataDisk: z.string().optional(),
});
export type IscsiRecord = z.infer<typeof iscsiRecordSchema>;

/**
 * A container lease's persistent volume (/data): its own disk and target on the controller, exported to
 * the one shared board the container runs on (`boardId`); moving the lease re-exports it, with new
 * secrets, to the next board alone.
 */
export const volumeRecordSchema = iscsiRecordSchema.extend({
  boardId: z.string(),
  /** It has held a file system: never formatted again, whatever a board reads from it. */
  formatted: z.boolean().optional(),
});
export type VolumeRecord = z.infer<typeof volumeRecordSchema>;

export const containerRecordSchema = z.looseObject({
  hostId: z.string(),
  containerId: z.string(),
  memoryMb: z.number(),
  cpus: z.number(),
  sshPort: z.number().optional(),
});
export type ContainerRecord = z.infer<typeof containerRecordSchema>;

export const leaseSchema = z.object({
  id: z.string(),
  tenantId: tenantIdSchema,
  kind: z.enum(['board', 'container']),
  boardId: z.string().optional(),
  /** The board's reserved address, as the tenant reaches it (ssh -J through the gateway); set at allocation. */
  boardIp: z.ipv4().optional(),
  image: z.string(),
  sshKeys: z.array(z.string()),
  hostname: z.string(),
  /** Root's console password as a SHA-512 crypt hash (never the password): to the board via metadata. */
  consolePasswordHash: z.string().optional(),
  state: z.enum(LEASE_STATES),
  stateReason: z.string().optional(),
  createdAt: z.string(),
  expiresAt: z.string().optional(),
  releasedAt: z.string().optional(),
  jobId: z.string().optional(),
  /** Made afresh for every boot of the board (power on or cycle): metadata and phone-home need it. */
  bootToken: z.string().optional(),
  iscsi: iscsiRecordSchema.optional(),
  container: containerRecordSchema.optional(),
  /** A container lease's persistent /data on controller storage (shared boards only). */
  volume: volumeRecordSchema.optional(),
  /** `engine`: the controller's own lease of a shared board (tenant SYSTEM_TENANT), which runs Docker for container leases. */
  purpose: z.enum(['engine']).optional(),
});
export type Lease = z.infer<typeof leaseSchema>;

export const JOB_KINDS = ['provision', 'reimage', 'release', 'power'] as const;
export const jobStepSchema = z.object({
  name: z.string(),
  state: z.enum(['pending', 'running', 'done', 'failed', 'skipped']),
  attempts: z.number().int().nonnegative(),
  startedAt: z.string().optional(),
  endedAt: z.string().optional(),
  error: z.string().optional(),
});
export type JobStep = z.infer<typeof jobStepSchema>;
export const jobSchema = z.object({
  id: z.string(),
  kind: z.enum(JOB_KINDS),
  leaseId: z.string(),
  tenantId: tenantIdSchema,
  state: z.enum(['running', 'succeeded', 'failed']),
  steps: z.array(jobStepSchema),
  /** Parameters the job was started with (e.g. a container's size, a power job's action and who asked). */
  params: z.record(z.string(), z.string()).default({}),
  createdAt: z.string(),
  endedAt: z.string().optional(),
  error: z.string().optional(),
});
export type Job = z.infer<typeof jobSchema>;

/** A board's recorded state transitions (the live boot chatter stays in memory: inventory/events.ts). */
export const transitionSchema = z.object({
  time: z.string(),
  boardId: z.string(),
  from: z.enum(BOARD_STATES),
  to: z.enum(BOARD_STATES),
  reason: z.string(),
});
export type Transition = z.infer<typeof transitionSchema>;

export const stateSchema = z.object({
  version: z.literal(SCHEMA_VERSION),
  /** The controller this state belongs to; its storage directory carries the same id (storage/identity.ts). */
  controllerId: z.string().optional(),
  boards: z.array(boardSchema),
  discovered: z.array(discoveredSchema),
  tenants: z.array(tenantSchema),
  tokens: z.array(tokenSchema),
  leases: z.array(leaseSchema),
  jobs: z.array(jobSchema),
  transitions: z.array(transitionSchema),
});
export type State = z.infer<typeof stateSchema>;

export function emptyState(): State {
  return { version: SCHEMA_VERSION, boards: [], discovered: [], tenants: [], tokens: [], leases: [], jobs: [], transitions: [] };
}

/**
 * Migrations from older file versions, keyed by the version they upgrade from. Each returns the next
 * version's shape; the result is validated against the current schema.
 */
export const migrations: Record<number, (old: any) => any> = {
  // v2: tenants, tokens, leases, jobs and recorded board transitions.
  1: (old) => ({ ...old, version: 2, tenants: [], tokens: [], leases: [], jobs: [], transitions: [] }),
};

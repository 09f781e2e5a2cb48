import { z } from 'zod';
import { isMac, normalizeMac } from '../util/net.js';

export const SCHEMA_VERSION = 1;

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
  .refine((s) => s.startsWith('/') || /^tcp:\/\/[^/:]+:\d+$/.test(s), {
    message: 'a device path (/dev/ttyUSB0) or tcp://host:port',
  });

export const boardSchema = z.object({
  id: boardIdSchema,
  mac: macSchema,
  model: z.string().min(1).max(64),
  arch: z.enum(ARCHES),
  ip: z.ipv4(),
  serial: serialSchema.optional(),
  power: powerSchema,
  image: z.string().min(1),
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

export const stateSchema = z.object({
  version: z.literal(SCHEMA_VERSION),
  boards: z.array(boardSchema),
  discovered: z.array(discoveredSchema),
});
export type State = z.infer<typeof stateSchema>;

export function emptyState(): State {
  return { version: SCHEMA_VERSION, boards: [], discovered: [] };
}

/**
 * Migrations from older file versions, keyed by the version they upgrade from. Each returns the next
 * version's shape; the result is validated against the current schema.
 */
export const migrations: Record<number, (old: any) => any> = {};

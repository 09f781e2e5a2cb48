import { z } from 'zod';
import { ARCHES, tenantIdSchema } from '../store/schema.js';

/** One OpenSSH public key line: type, base64 body, optional comment. */
export const sshKeySchema = z
  .string()
  .trim()
  // An RSA 16384-bit key line is about 2.8 KiB: 4 KiB leaves room for a comment, and 32 keys stay small.
  .max(4096, 'an SSH key line is at most 4096 characters')
  .regex(/^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com) [A-Za-z0-9+/=]+( [^\n\r]*)?$/, 'must be an OpenSSH public key line (ssh-ed25519 AAAA… comment)');

export const hostnameSchema = z.string().regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/, 'a DNS label: lower-case letters, digits, dashes');

export const createLeaseSchema = z
  .object({
    kind: z.enum(['board', 'container', 'any']).default('board'),
    image: z.string().min(1),
    board: z.string().optional(),
    model: z.string().optional(),
    arch: z.enum(ARCHES).optional(),
    sshKeys: z.array(sshKeySchema).max(32).default([]),
    hostname: hostnameSchema.optional(),
    /**
     * Board leases: root's password on the serial console. Kept only as its crypt hash; the board gets the
     * hash through its metadata. Printable ASCII, no newline (it is typed at a login prompt).
     */
    consolePassword: z.string().min(8, 'at least 8 characters').max(128).regex(/^[\x20-\x7e]+$/, 'printable ASCII characters only').optional(),
    expiresAt: z.iso.datetime({ offset: true }).refine((t) => Date.parse(t) > Date.now(), 'must be in the future').optional(),
    /** kind any: the container image to fall back to (default: the first built one). */
    containerImage: z.string().min(1).optional(),
    /** Container leases: memory limit in MiB and CPUs. */
    memory: z.number().int().min(16).max(65536).optional(),
    cpus: z.number().min(0.1).max(64).optional(),
    /** Admins lease on behalf of a tenant. */
    tenant: tenantIdSchema.optional(),
  })
  .strict();
export type CreateLease = z.infer<typeof createLeaseSchema>;

export const reimageSchema = z.object({ image: z.string().min(1).optional() }).strict();
export const powerActionSchema = z.object({ action: z.enum(['on', 'off', 'cycle']) }).strict();

/**
 * The engine CA's use of the openssl CLI (Node can verify X.509 but not create it). openssl runs through
 * the command helper (src/exec/spawner.ts) with an argv array, never a shell, and every subject and
 * extension comes from a config file this module writes: nothing a caller passes is parsed by openssl's
 * `-subj` / `-addext` string syntax.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { runCommand } from '../exec/spawner.js';

export class EngineCaError extends Error {
  override readonly name = 'EngineCaError';
}

/** Runs openssl; its stdout on success, an error with the tail of stderr otherwise. */
export async function openssl(args: string[]): Promise<string> {
  const r = await runCommand({ file: 'openssl', args, timeoutMs: 30_000 });
  if (!r.error && !r.timedOut && r.code === 0) return r.stdout;
  const why = r.timedOut ? 'timed out' : (r.stderr || r.error || `exit ${r.code ?? r.signal}`).trim().split('\n').slice(-4).join(' | ');
  throw new EngineCaError(`engine CA: openssl ${args[0]} failed: ${why}`);
}

/** A new EC P-256 key (PKCS#8 PEM): what test/containers/dockerd.sh uses, read by Node and by Go's dockerd. */
export function newKey(): string {
  return generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
}

/** A random positive 127-bit serial (RFC 5280: unique per CA, ≤ 20 octets). No serial file: nothing to race on. */
export function randomSerial(): string {
  const b = randomBytes(16);
  b[0] = (b[0]! & 0x7f) | 0x01;
  return `0x${b.toString('hex')}`;
}

/** Writes a new file (never an existing one: O_EXCL) with its mode, and fsyncs it. */
export async function writeNew(path: string, text: string, mode: number): Promise<void> {
  const fh = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, mode);
  try {
    await fh.writeFile(text);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** fsync of a directory: a rename or a new entry in it survives a power cut. */
export async function syncDir(path: string): Promise<void> {
  const fh = await open(path, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Every value that goes into a config file. The callers validate more strictly; this is the last guard,
 * so that a later, wider validation can never reach openssl's config syntax (`$var`, `#`, `\`, quotes,
 * `@section`, commas, newlines). 64: X.509's upper bound for a CN.
 */
const CONFIG_VALUE = /^[A-Za-z0-9.:_-]+( [A-Za-z0-9.:_-]+)*$/;

function value(v: string): string {
  if (!CONFIG_VALUE.test(v) || v.length > 64) throw new EngineCaError(`engine CA: refusing config value ${JSON.stringify(v)}`);
  return v;
}

export type LeafKind = { kind: 'client' } | { kind: 'server'; ip: string; dns?: string };

/** The request part every config shares: no prompts, a subject of just the common name. */
function request(cn: string): string[] {
  return ['[req]', 'prompt = no', 'distinguished_name = dn', '[dn]', `CN = ${value(cn)}`];
}

/**
 * The config file for one certificate: [dn] for the request, [ext] for the certificate. Leaves are never
 * CAs, sign nothing (keyUsage digitalSignature: ECDHE-ECDSA needs no more), and carry exactly one of
 * clientAuth or serverAuth, so a board's server certificate cannot act as the controller's client one.
 */
export function leafConfig(cn: string, leaf: LeafKind): string {
  const lines = [
    ...request(cn),
    '[ext]',
    'basicConstraints = critical, CA:FALSE',
    'keyUsage = critical, digitalSignature',
    `extendedKeyUsage = ${leaf.kind === 'client' ? 'clientAuth' : 'serverAuth'}`,
    'subjectKeyIdentifier = hash',
    'authorityKeyIdentifier = keyid:always',
  ];
  if (leaf.kind === 'server') {
    lines.push('subjectAltName = @san', '[san]', `IP.1 = ${value(leaf.ip)}`);
    if (leaf.dns) lines.push(`DNS.1 = ${value(leaf.dns)}`);
  }
  return lines.join('\n') + '\n';
}

/** The CA's config: pathlen:0, so even a mis-signed CA certificate under it could not sign anything valid. */
export function caConfig(cn: string): string {
  return [
    ...request(cn),
    '[ext]',
    'basicConstraints = critical, CA:TRUE, pathlen:0',
    'keyUsage = critical, keyCertSign, cRLSign',
    'subjectKeyIdentifier = hash',
  ].join('\n') + '\n';
}

/** Makes the self-signed CA certificate for the key at `keyPath` (its PEM). */
export async function selfSign(work: string, keyPath: string, cn: string, days: number): Promise<string> {
  const cnf = join(work, 'ca.cnf');
  await writeNew(cnf, caConfig(cn), 0o600);
  return openssl(['req', '-new', '-x509', '-key', keyPath, '-config', cnf, '-extensions', 'ext', '-days', String(days), '-sha256', '-set_serial', randomSerial()]);
}

/**
 * A new key and a certificate for it signed by the CA. The key is written to `work` (a 0700 directory
 * the caller removes) only because `openssl req` reads it from a file.
 */
export async function signLeaf(work: string, ca: { certPath: string; keyPath: string }, cn: string, leaf: LeafKind, days: number): Promise<{ cert: string; key: string }> {
  const key = newKey();
  const keyPath = join(work, `scratch-${leaf.kind}.key`);
  const cnf = join(work, `scratch-${leaf.kind}.cnf`);
  const csr = join(work, `scratch-${leaf.kind}.csr`);
  await writeNew(keyPath, key, 0o600);
  await writeNew(cnf, leafConfig(cn, leaf), 0o600);
  await writeNew(csr, await openssl(['req', '-new', '-key', keyPath, '-config', cnf, '-sha256']), 0o600);
  const cert = await openssl(['x509', '-req', '-in', csr, '-CA', ca.certPath, '-CAkey', ca.keyPath, '-extfile', cnf, '-extensions', 'ext', '-days', String(days), '-sha256', '-set_serial', randomSerial()]);
  return { cert, key };
}

/**
 * The controller's Docker-engine CA (docs/shared-boards.md §2). Shared boards run dockerd with
 * `--tlsverify`, trusting this CA alone: ANY certificate it signs with clientAuth is root on every shared
 * board. So it signs exactly two kinds and has no general-purpose `sign()`:
 *   - the controller's one client certificate (clientAuth), made with the CA and kept beside it;
 *   - a board's server certificate (serverAuth, SAN IP:<board ip>), made per provisioning, not kept.
 * Nothing else in DozenCloud may use it (not the gateway, not tenants' TLS).
 *
 * Directory layout (all made together, then published with one rename):
 *   ca-key.pem (0600)  ca.pem  client-key.pem (0600)  client.pem
 */
import { X509Certificate, createPrivateKey, type KeyObject, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, readdir, rename, rm, stat } from 'node:fs/promises';
import { isIP } from 'node:net';
import { basename, dirname, join, resolve } from 'node:path';
import { EngineCaError, newKey, selfSign, signLeaf, syncDir, writeNew } from './openssl.js';

/** TLS material in the shape src/containers/host.ts takes (PEM text). */
export interface EngineTls {
  ca: string;
  cert: string;
  key: string;
}

export interface IssueServerRequest {
  boardId: string;
  /** The board's address as the controller dials it (its DHCP reservation). */
  ip: string;
  /** Validity; default 365. Never past the CA's own end. */
  days?: number;
}

const CA_KEY = 'ca-key.pem';
const CA_CERT = 'ca.pem';
const CLIENT_KEY = 'client-key.pem';
const CLIENT_CERT = 'client.pem';

const CA_DAYS = 3650;
const SERVER_DAYS = 365;
/** Scratch directories older than this are a crashed run's: their keys are removed on open. */
const STALE_MS = 3600_000;

/** As src/store/schema.ts boardIdSchema; repeated here so a later widening there cannot reach openssl. */
const BOARD_ID = /^[a-z0-9][a-z0-9-]{0,31}$/;
/** A UUID fits (src/server.ts makes one); 40 keeps "DozenCloud controller <id>" within a CN's 64. */
const CONTROLLER_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$/;

export class EngineCa {
  private constructor(
    /** Absolute path of the CA directory. */
    readonly dir: string,
    readonly caPem: string,
    private readonly caCert: X509Certificate,
    private readonly client: EngineTls,
  ) {}

  /**
   * Loads the CA in `dir`, or creates it there if `dir` is missing or empty. Safe when two servers start
   * at once (one rename wins, the other loads the winner's). An existing CA is never overwritten or
   * repaired: a missing, corrupt or group/other-readable file is an error naming it, and stays as it is.
   */
  static async open(dir: string, opts: { controllerId?: string } = {}): Promise<EngineCa> {
    dir = resolve(dir);
    if (opts.controllerId !== undefined && !CONTROLLER_ID.test(opts.controllerId)) {
      throw new EngineCaError(`engine CA: controllerId ${JSON.stringify(opts.controllerId)} must be letters, digits, '.', '_' or '-' (at most 40)`);
    }
    if (await missingOrEmpty(dir)) await create(dir, opts.controllerId ?? randomBytes(8).toString('hex'));
    const ca = await EngineCa.load(dir);
    await sweep(dir, '.issue-');
    await sweep(dirname(dir), `.${basename(dir)}.new-`);
    return ca;
  }

  /** The controller's client certificate (clientAuth), the same across restarts. */
  clientCert(): EngineTls {
    return { ...this.client };
  }

  /** When the CA expires: a board certificate cannot outlive it, and then every board needs a new CA. */
  get validTo(): Date {
    return new Date(this.caCert.validTo);
  }

  /**
   * A fresh key and server certificate for one board: SAN IP:<ip> (Node and Go match an IP host only
   * against IP SANs), plus DNS:<boardId> when the id is a valid DNS label. Nothing is kept: the key exists
   * on the controller only in a 0700 scratch directory during the openssl run; the caller delivers it.
   */
  async issueServer(req: IssueServerRequest): Promise<EngineTls> {
    const { boardId, ip } = req;
    const days = req.days ?? SERVER_DAYS;
    if (typeof boardId !== 'string' || !BOARD_ID.test(boardId)) {
      throw new EngineCaError(`engine CA: board id ${JSON.stringify(boardId)} is not lower-case letters, digits and dashes (at most 32)`);
    }
    // isIP accepts an IPv6 zone (fe80::1%eth0): meaningless in a certificate, and '%' is no config text.
    if (typeof ip !== 'string' || isIP(ip) === 0 || ip.includes('%')) {
      throw new EngineCaError(`engine CA: ${JSON.stringify(ip)} is not an IPv4 or IPv6 address (board ${boardId})`);
    }
    if (!Number.isInteger(days) || days < 1 || days > CA_DAYS) throw new EngineCaError(`engine CA: days must be 1..${CA_DAYS}, not ${days}`);
    const end = Date.now() + days * 86_400_000;
    if (end > this.validTo.getTime()) {
      throw new EngineCaError(`engine CA ${this.dir} expires ${this.validTo.toISOString()}, before a ${days}-day certificate for ${boardId} would: the CA must be renewed`);
    }
    // A DNS label may not end with '-' (RFC 1123); the id's other rules already fit one.
    const dns = boardId.endsWith('-') ? undefined : boardId;
    const work = await mkdtemp(join(this.dir, '.issue-'));
    try {
      const leaf = await signLeaf(work, this.paths(), boardId, { kind: 'server', ip, ...(dns ? { dns } : {}) }, days);
      // openssl reports most mistakes; this catches a certificate that would not serve its purpose.
      const cert = new X509Certificate(leaf.cert);
      if (!cert.checkIssued(this.caCert) || !cert.verify(this.caCert.publicKey) || cert.checkIP(ip) === undefined) {
        throw new EngineCaError(`engine CA: the certificate issued for ${boardId} does not chain to the CA or lacks IP ${ip}`);
      }
      return { ca: this.caPem, cert: leaf.cert, key: leaf.key };
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  }

  /** Loads and cross-checks the four files: each key fits its certificate, the client's chains to the CA. */
  private static async load(dir: string): Promise<EngineCa> {
    const caKey = await readKey(join(dir, CA_KEY));
    const caPem = await readPem(join(dir, CA_CERT));
    const ca = parseCert(caPem, join(dir, CA_CERT));
    if (!ca.ca) throw broken(join(dir, CA_CERT), 'is not a CA certificate');
    if (!ca.checkPrivateKey(caKey.key)) throw broken(join(dir, CA_KEY), `does not belong to ${join(dir, CA_CERT)}`);
    const clientKey = await readKey(join(dir, CLIENT_KEY));
    const clientPem = await readPem(join(dir, CLIENT_CERT));
    const client = parseCert(clientPem, join(dir, CLIENT_CERT));
    if (!client.checkIssued(ca) || !client.verify(ca.publicKey)) throw broken(join(dir, CLIENT_CERT), `is not signed by ${join(dir, CA_CERT)}`);
    if (!client.checkPrivateKey(clientKey.key)) throw broken(join(dir, CLIENT_KEY), `does not belong to ${join(dir, CLIENT_CERT)}`);
    return new EngineCa(dir, caPem, ca, { ca: caPem, cert: clientPem, key: clientKey.pem });
  }

  private paths(): { certPath: string; keyPath: string } {
    return { certPath: join(this.dir, CA_CERT), keyPath: join(this.dir, CA_KEY) };
  }
}

async function missingOrEmpty(dir: string): Promise<boolean> {
  try {
    return (await readdir(dir)).length === 0;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return true;
    throw new EngineCaError(`engine CA ${dir}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * Makes the CA and the client certificate in a sibling temp directory, then renames it onto `dir`.
 * rename(2) replaces only a missing or empty directory, atomically: of two servers racing, one wins and
 * the other gets ENOTEMPTY/EEXIST and loads what the winner made. A crash leaves only the temp directory.
 */
async function create(dir: string, label: string): Promise<void> {
  const parent = dirname(dir);
  await mkdir(parent, { recursive: true, mode: 0o700 });
  const tmp = join(parent, `.${basename(dir)}.new-${randomBytes(6).toString('hex')}`);
  await mkdir(tmp, { mode: 0o700 });
  try {
    const caKey = join(tmp, CA_KEY);
    const caCert = join(tmp, CA_CERT);
    await writeNew(caKey, newKey(), 0o600);
    await writeNew(caCert, await selfSign(tmp, caKey, `DozenCloud engine CA ${label}`, CA_DAYS), 0o644);
    // Same lifetime as the CA: the controller's access to the boards ends only with the CA itself.
    const client = await signLeaf(tmp, { certPath: caCert, keyPath: caKey }, `DozenCloud controller ${label}`, { kind: 'client' }, CA_DAYS);
    await writeNew(join(tmp, CLIENT_KEY), client.key, 0o600);
    await writeNew(join(tmp, CLIENT_CERT), client.cert, 0o644);
    for (const f of await readdir(tmp)) if (![CA_KEY, CA_CERT, CLIENT_KEY, CLIENT_CERT].includes(f)) await rm(join(tmp, f));
    await syncDir(tmp);
    try {
      await rename(tmp, dir);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOTEMPTY' || code === 'EEXIST') return; // another server's CA got there first
      throw new EngineCaError(`engine CA ${dir}: ${(err as Error).message}`, { cause: err });
    }
    await syncDir(parent);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

function broken(path: string, what: string, cause?: unknown): EngineCaError {
  const detail = cause instanceof Error ? ` (${cause.message})` : '';
  return new EngineCaError(
    `engine CA: ${path} ${what}${detail}. Left as it is: restore the directory from a backup. ` +
      'A new CA would mean new certificates on every shared board.',
    cause === undefined ? undefined : { cause },
  );
}

async function readPem(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw broken(path, 'is missing (a half-made or foreign CA directory)');
    throw broken(path, 'cannot be read', err);
  }
}

async function readKey(path: string): Promise<{ pem: string; key: KeyObject }> {
  const pem = await readPem(path);
  const mode = (await stat(path)).mode & 0o777;
  if (mode & 0o077) throw new EngineCaError(`engine CA: key ${path} is readable by others (mode ${mode.toString(8)}): chmod 600 it`);
  try {
    return { pem, key: createPrivateKey(pem) };
  } catch (err) {
    throw broken(path, 'is not a PEM private key', err);
  }
}

function parseCert(pem: string, what: string): X509Certificate {
  try {
    return new X509Certificate(pem);
  } catch (err) {
    throw broken(what, 'is not a PEM certificate', err);
  }
}

/** Removes scratch directories (`prefix*`) a crashed run left; recent ones may be another server's, live. */
async function sweep(dir: string, prefix: string): Promise<void> {
  let names: string[];
  try {
    names = (await readdir(dir)).filter((n) => n.startsWith(prefix));
  } catch {
    return;
  }
  for (const n of names) {
    const p = join(dir, n);
    const st = await stat(p).catch(() => undefined);
    if (st?.isDirectory() && Date.now() - st.mtimeMs > STALE_MS) await rm(p, { recursive: true, force: true });
  }
}

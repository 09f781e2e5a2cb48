/** The Docker-engine CA (src/engine-ca): real openssl, real TLS handshakes on loopback. */
import { execFileSync } from 'node:child_process';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readFile, readdir, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { type AddressInfo } from 'node:net';
import { request, createServer, type Server } from 'node:https';
import type { TLSSocket } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EngineCa, type EngineTls } from '../../src/engine-ca/index.js';
import { requireTools } from '../helpers/tools.js';

let root: string;
let n = 0;
/** A fresh, not yet existing CA directory under this file's temp root. */
const freshDir = () => join(root, `ca-${++n}`);
const mode = async (p: string) => (await stat(p)).mode & 0o777;

beforeAll(async () => {
  requireTools('openssl');
  root = await mkdtemp(join(tmpdir(), 'engine-ca-'));
});
afterAll(async () => {
  if (root) await rm(root, { recursive: true, force: true });
});

describe('EngineCa.open', () => {
  it('creates the CA and the client certificate once, with private modes, and reopens the same', async () => {
    const dir = freshDir();
    const ca = await EngineCa.open(dir, { controllerId: '0b9e7c1a-5b4f-4c43-9d7e-1f2a3b4c5d6e' });
    expect((await readdir(dir)).sort()).toEqual(['ca-key.pem', 'ca.pem', 'client-key.pem', 'client.pem']);
    expect(await mode(dir)).toBe(0o700);
    expect(await mode(join(dir, 'ca-key.pem'))).toBe(0o600);
    expect(await mode(join(dir, 'client-key.pem'))).toBe(0o600);
    expect(await readdir(root)).toEqual([`ca-${n}`]); // no temp directory left beside it

    const caCert = new X509Certificate(await readFile(join(dir, 'ca.pem')));
    expect(caCert.subject).toBe('CN=DozenCloud engine CA 0b9e7c1a-5b4f-4c43-9d7e-1f2a3b4c5d6e');
    expect(caCert.ca).toBe(true);
    const years = (Date.parse(caCert.validTo) - Date.now()) / (365.25 * 86_400_000);
    expect(years).toBeGreaterThan(9.9);
    const text = execFileSync('openssl', ['x509', '-in', join(dir, 'ca.pem'), '-noout', '-text'], { encoding: 'utf8' });
    expect(text).toMatch(/Basic Constraints: critical\s+CA:TRUE, pathlen:0/);
    expect(text).toMatch(/Key Usage: critical\s+Certificate Sign, CRL Sign/);

    const client = ca.clientCert();
    expect(client.ca).toBe(caCert.toString());
    const clientCert = new X509Certificate(client.cert);
    expect(clientCert.keyUsage).toEqual(['1.3.6.1.5.5.7.3.2']); // clientAuth only (Node names the EKU list keyUsage)
    expect(clientCert.ca).toBe(false);
    expect(clientCert.verify(caCert.publicKey)).toBe(true);

    const again = await EngineCa.open(dir);
    expect(again.clientCert()).toEqual(client);
    expect(again.caPem).toBe(ca.caPem);
  });

  it('creates in an existing empty directory; without a controllerId the CN gets a random label', async () => {
    const dir = freshDir();
    await mkdir(dir, { mode: 0o755 });
    const ca = await EngineCa.open(dir);
    expect(new X509Certificate(ca.caPem).subject).toMatch(/^CN=DozenCloud engine CA [0-9a-f]{16}$/);
    expect(await mode(dir)).toBe(0o700);
  });

  it('two servers opening an empty directory at once end with one CA', async () => {
    const dir = freshDir();
    const cas = await Promise.all([EngineCa.open(dir), EngineCa.open(dir), EngineCa.open(dir)]);
    const onDisk = await readFile(join(dir, 'ca.pem'), 'utf8');
    for (const ca of cas) {
      expect(ca.caPem).toBe(onDisk);
      expect(ca.clientCert().cert).toBe(await readFile(join(dir, 'client.pem'), 'utf8'));
    }
    expect((await readdir(root)).filter((f) => f.includes('.new-'))).toEqual([]);
  });

  it('refuses a key readable by others, and leaves it as it is', async () => {
    const dir = freshDir();
    await EngineCa.open(dir);
    for (const file of ['ca-key.pem', 'client-key.pem']) {
      const key = join(dir, file);
      const before = await readFile(key, 'utf8');
      await chmod(key, 0o644);
      await expect(EngineCa.open(dir)).rejects.toThrow(`key ${key} is readable by others (mode 644): chmod 600 it`);
      expect(await readFile(key, 'utf8')).toBe(before);
      expect(await mode(key)).toBe(0o644);
      await chmod(key, 0o600);
    }
    await EngineCa.open(dir);
  });

  it('refuses a corrupt or missing file, naming it, and never replaces it', async () => {
    const dir = freshDir();
    await EngineCa.open(dir);
    const caPem = join(dir, 'ca.pem');
    const good = await readFile(caPem, 'utf8');
    await truncate(caPem, 100); // half-written
    const half = await readFile(caPem, 'utf8');
    await expect(EngineCa.open(dir)).rejects.toThrow(new RegExp(`${caPem} is not a PEM certificate.*Left as it is`));
    expect(await readFile(caPem, 'utf8')).toBe(half);

    await writeFile(caPem, good);
    const clientKey = join(dir, 'client-key.pem');
    await writeFile(clientKey, 'garbage\n', { mode: 0o600 });
    await expect(EngineCa.open(dir)).rejects.toThrow(`${clientKey} is not a PEM private key`);
    expect(await readFile(clientKey, 'utf8')).toBe('garbage\n');

    await rm(clientKey);
    await expect(EngineCa.open(dir)).rejects.toThrow(`${clientKey} is missing`);
    expect((await readdir(dir)).sort()).toEqual(['ca-key.pem', 'ca.pem', 'client.pem']);

    // Another CA's client certificate (a mixed-up restore) does not pass either.
    const other = await EngineCa.open(freshDir());
    await writeFile(clientKey, other.clientCert().key, { mode: 0o600 });
    await writeFile(join(dir, 'client.pem'), other.clientCert().cert);
    await expect(EngineCa.open(dir)).rejects.toThrow(`${join(dir, 'client.pem')} is not signed by ${caPem}`);
  });

  it('refuses a controllerId that is not a plain name', async () => {
    await expect(EngineCa.open(freshDir(), { controllerId: 'x/CN=evil' })).rejects.toThrow(/controllerId "x\/CN=evil" must be letters, digits/);
  });
});

describe('issueServer', () => {
  let ca: EngineCa;
  let dir: string;
  beforeAll(async () => {
    dir = freshDir();
    ca = await EngineCa.open(dir, { controllerId: 'test' });
  });

  it('issues serverAuth with SAN IP (and DNS when the id is a DNS label), 1 year, keeping nothing', async () => {
    const tls = await ca.issueServer({ boardId: 'bpi-s1', ip: '10.0.0.5' });
    expect(tls.ca).toBe(ca.caPem);
    const cert = new X509Certificate(tls.cert);
    expect(cert.subject).toBe('CN=bpi-s1');
    expect(cert.subjectAltName).toBe('IP Address:10.0.0.5, DNS:bpi-s1');
    expect(cert.keyUsage).toEqual(['1.3.6.1.5.5.7.3.1']); // serverAuth only
    expect(cert.ca).toBe(false);
    expect(cert.checkPrivateKey(createPrivateKey(tls.key))).toBe(true);
    const days = (Date.parse(cert.validTo) - Date.now()) / 86_400_000;
    expect(days).toBeGreaterThan(364);
    expect(days).toBeLessThan(366);
    // Two issues: two keys (nothing reused), and nothing left in the CA directory.
    const again = await ca.issueServer({ boardId: 'bpi-s1', ip: '10.0.0.5' });
    expect(again.key).not.toBe(tls.key);
    expect(new X509Certificate(again.cert).serialNumber).not.toBe(cert.serialNumber);
    expect((await readdir(dir)).sort()).toEqual(['ca-key.pem', 'ca.pem', 'client-key.pem', 'client.pem']);

    expect(new X509Certificate((await ca.issueServer({ boardId: 'odd-', ip: '::1' })).cert).subjectAltName).toBe('IP Address:0:0:0:0:0:0:0:1');
    expect(new X509Certificate((await ca.issueServer({ boardId: 'b', ip: '10.0.0.6', days: 30 })).cert).validTo).toBeTruthy();
  });

  it('rejects a bad address or board id with a clear message, before openssl sees it', async () => {
    for (const ip of ['10.0.0', '10.0.0.256', '10.0.0.5/CN=x', '10.0.0.5\nDNS.2 = evil', 'fe80::1%eth0', '', 'localhost']) {
      await expect(ca.issueServer({ boardId: 'bpi-s1', ip })).rejects.toThrow(`${JSON.stringify(ip)} is not an IPv4 or IPv6 address (board bpi-s1)`);
    }
    for (const boardId of ['/CN=evil', 'bpi\nCN = evil', 'bpi,DNS:evil', 'BPI', '-bpi', '', 'x'.repeat(33), 'bpi $ENV', 'bpi.s1']) {
      await expect(ca.issueServer({ boardId, ip: '10.0.0.5' })).rejects.toThrow(`board id ${JSON.stringify(boardId)} is not lower-case letters, digits and dashes`);
    }
    await expect(ca.issueServer({ boardId: 'b', ip: '10.0.0.5', days: 0 })).rejects.toThrow('days must be 1..3650');
    await expect(ca.issueServer({ boardId: 'b', ip: '10.0.0.5', days: 3650 })).rejects.toThrow(/expires .* before a 3650-day certificate for b would/);
  });
});

describe('TLS with the issued material', () => {
  let ca: EngineCa;
  let work: string;
  /** A CA and a client certificate of our own, made the way test/containers/dockerd.sh does. */
  let foreign: EngineTls;
  const servers: Server[] = [];

  beforeAll(async () => {
    ca = await EngineCa.open(freshDir());
    work = await mkdtemp(join(root, 'foreign-'));
    const o = (args: string[]) => execFileSync('openssl', args, { cwd: work, stdio: ['ignore', 'ignore', 'pipe'] });
    o(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=foreign-ca', '-keyout', 'ca-key.pem', '-out', 'ca.pem']);
    o(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', '/CN=intruder', '-keyout', 'key.pem', '-out', 'client.csr']);
    await writeFile(join(work, 'client.ext'), 'extendedKeyUsage=clientAuth\n');
    o(['x509', '-req', '-in', 'client.csr', '-CA', 'ca.pem', '-CAkey', 'ca-key.pem', '-set_serial', '1', '-days', '1', '-extfile', 'client.ext', '-out', 'cert.pem']);
    const r = (f: string) => readFile(join(work, f), 'utf8');
    foreign = { ca: await r('ca.pem'), cert: await r('cert.pem'), key: await r('key.pem') };
  });
  afterAll(async () => {
    for (const s of servers) s.close();
  });

  /**
   * An https server like dockerd --tlsverify: only clients whose certificate chains to the engine CA.
   * Node's server drops a refused client without telling why (it destroys the socket after the
   * handshake), so `why()` asks a twin that admits everyone and answers with `authorizationError`.
   */
  async function engine(tls: EngineTls): Promise<{ port: number; why: (client: Partial<EngineTls>) => Promise<string> }> {
    const listen = async (rejectUnauthorized: boolean) => {
      const server = createServer({ ca: tls.ca, cert: tls.cert, key: tls.key, requestCert: true, rejectUnauthorized }, (req, res) => {
        const socket = req.socket as TLSSocket;
        res.statusCode = socket.authorized ? 200 : 403;
        res.end(socket.authorized ? 'OK' : String(socket.authorizationError));
      });
      servers.push(server);
      await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
      return (server.address() as AddressInfo).port;
    };
    const port = await listen(true);
    const twin = await listen(false);
    return { port, why: async (client) => (await get(twin, client)).body };
  }

  function get(port: number, client: Partial<EngineTls>): Promise<{ status: number; body: string }> {
    return new Promise((ok, fail) => {
      const req = request({ host: '127.0.0.1', port, path: '/_ping', agent: false, ...client }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => ok({ status: res.statusCode!, body }));
      });
      req.on('error', fail);
      req.end();
    });
  }

  it('the controller client gets through to a board server issued for its IP', async () => {
    const board = await engine(await ca.issueServer({ boardId: 'bpi-s1', ip: '127.0.0.1' }));
    expect(await get(board.port, ca.clientCert())).toEqual({ status: 200, body: 'OK' });
  });

  it('a client certificate from another CA is refused', async () => {
    const board = await engine(await ca.issueServer({ boardId: 'bpi-s1', ip: '127.0.0.1' }));
    const intruder = { ...foreign, ca: ca.caPem };
    await expect(get(board.port, intruder)).rejects.toThrow(/socket hang up|disconnected/);
    expect(await board.why(intruder)).toBe('UNABLE_TO_VERIFY_LEAF_SIGNATURE') // its issuer is not the engine CA;
    // No client certificate at all: refused too.
    await expect(get(board.port, { ca: ca.caPem })).rejects.toThrow(/socket hang up|disconnected|alert certificate required/);
  });

  it('a server certificate issued for another IP fails the client hostname check', async () => {
    const board = await engine(await ca.issueServer({ boardId: 'bpi-s1', ip: '127.0.0.2' }));
    await expect(get(board.port, ca.clientCert())).rejects.toMatchObject({ code: 'ERR_TLS_CERT_ALTNAME_INVALID' });
  });

  it('a board server certificate presented as a client certificate is refused (no clientAuth)', async () => {
    const board = await engine(await ca.issueServer({ boardId: 'bpi-s1', ip: '127.0.0.1' }));
    const stolen = await ca.issueServer({ boardId: 'bpi-s2', ip: '127.0.0.1' });
    const asClient = { ca: ca.caPem, cert: stolen.cert, key: stolen.key };
    await expect(get(board.port, asClient)).rejects.toThrow(/socket hang up|disconnected/);
    // Node's TLS server (OpenSSL's default purpose for a server verifying clients: sslclient) checks the EKU.
    expect(await board.why(asClient)).toBe('INVALID_PURPOSE');
    // The same check as openssl sees it (Go's dockerd requires ExtKeyUsageClientAuth likewise).
    const f = (name: string, text: string) => writeFile(join(work, name), text).then(() => join(work, name));
    const caFile = await f('engine-ca.pem', ca.caPem);
    const verify = (purpose: string, pem: string) =>
      execFileSync('openssl', ['verify', '-purpose', purpose, '-CAfile', caFile, pem], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    expect(() => verify('sslclient', caFile)).toThrow(); // (the CA itself is no client certificate either)
    const serverFile = await f('stolen.pem', stolen.cert);
    expect(() => verify('sslclient', serverFile)).toThrow(/(unsuitable|unsupported) certificate purpose/);
    expect(verify('sslserver', serverFile)).toMatch(/OK/);
    const clientFile = await f('client.pem', ca.clientCert().cert);
    expect(verify('sslclient', clientFile)).toMatch(/OK/);
    expect(() => verify('sslserver', clientFile)).toThrow(/(unsuitable|unsupported) certificate purpose/);
  });
});

import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import express, { type Express, type Request } from 'express';
import type { Server as HttpServer } from 'node:http';
import { listen } from '../api/listen.js';
import type { Lease } from '../store/schema.js';
import type { Store } from '../store/store.js';
import { isEngineTlsFile, type EngineTlsFile } from '../shared-boards/engine-tls.js';
import { log } from '../log.js';
import { SYSTEM_TENANT } from '../store/schema.js';
import type { LeaseSignals } from './waits.js';

export interface MetadataDeps {
  store: Store;
  signals: LeaseSignals;
  /** The board a lease runs on → that board's reserved IP. */
  boardIp: (boardId: string) => string | undefined;
  /** Container leases reach the service from their host's address (tests: loopback). */
  containerIp?: (lease: Lease) => string | undefined;
  onPhoneHome?: (lease: Lease, body: unknown) => void;
  /**
   * A shared board's engine TLS files (src/shared-boards/engine-tls.ts), or undefined (404). Asked only
   * for the controller's own engine leases, after the token and source checks every file has.
   */
  engineTls?: (lease: Lease, file: EngineTlsFile, boardIp: string) => Promise<string | undefined>;
}

/**
 * The URL a lease's OS reads its metadata from (cloud-init NoCloud `ds=nocloud-net;s=...`). It carries
 * the boot's token: a source address proves nothing on a shared segment, the token does, and only
 * until the next boot.
 */
export function metadataUrl(base: string, leaseId: string, bootToken: string): string {
  return `${base}/m/${leaseId}/${bootToken}/`;
}

/** Kernel arguments that point a board's OS at its metadata and phone-home URLs. */
export function metadataKernelArgs(base: string, leaseId: string, bootToken: string): string {
  const url = metadataUrl(base, leaseId, bootToken);
  return `ds=nocloud-net;s=${url} dozen.phonehome=${url}phone-home`;
}

/** A boot token: 24 letters and digits, safe in a URL, a kernel command line and a U-Boot script. */
export function newBootToken(): string {
  return randomBytes(18).toString('base64url').replace(/[-_]/g, 'x');
}

const remoteIp = (req: Request) => (req.socket.remoteAddress ?? '').replace(/^::ffff:/, '');

/**
 * The metadata service on the boot network: per lease, cloud-init's NoCloud layout (meta-data,
 * user-data, vendor-data) and a phone-home endpoint. A lease's data goes only to the leased board's
 * own IP; anyone else gets 404, as if the lease did not exist.
 */
export function metadataApp(d: MetadataDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.use(express.urlencoded({ extended: false, limit: '16kb' }));
  app.use(express.json({ limit: '16kb' }));

  const leaseFor = (req: Request): Lease | undefined => {
    const lease = d.store.state.leases.find((l) => l.id === req.params.lease);
    if (!lease || lease.state === 'released') return undefined;
    // Board leases: the current boot's token, compared in constant time. Container leases have no boot.
    if (lease.kind === 'board' && !(lease.bootToken && sameToken(lease.bootToken, String(req.params.token ?? '')))) return undefined;
    const ip = lease.kind === 'board' ? d.boardIp(lease.boardId!) : d.containerIp?.(lease);
    return ip && ip === remoteIp(req) ? lease : undefined;
  };

  app.get(['/m/:lease/:token/:file', '/m/:lease/:file'], (req, res) => {
    const lease = leaseFor(req);
    if (!lease) return void res.status(404).type('text').send('not found\n');
    const file = req.params.file;
    if (file === 'meta-data') {
      d.signals.note(lease.id, 'metadata');
      return void res.type('text').send(`instance-id: ${lease.id}\nlocal-hostname: ${lease.hostname}\n`);
    }
    if (file === 'user-data') {
      const keys = lease.sshKeys.map((k) => `  - ${JSON.stringify(k)}`).join('\n');
      // cloud-init's chpasswd `users` form; dozen-firstboot reads the same lines (images/debian-12).
      const password = lease.consolePasswordHash ? `chpasswd:\n  expire: false\n  users:\n    - name: root\n      type: hash\n      password: ${JSON.stringify(lease.consolePasswordHash)}\n` : '';
      return void res.type('text').send(`#cloud-config\nhostname: ${lease.hostname}\nssh_authorized_keys:\n${keys || '  []'}\n${password}`);
    }
    if (file === 'ssh-keys') return void res.type('text').send(lease.sshKeys.join('\n') + '\n');
    if (file === 'vendor-data') return void res.type('text').send('');
    if (typeof file === 'string' && isEngineTlsFile(file) && lease.purpose === 'engine' && lease.tenantId === SYSTEM_TENANT && d.engineTls) {
      const ip = d.boardIp(lease.boardId!)!;
      return void d.engineTls(lease, file, ip).then(
        (pem) => (pem === undefined ? res.status(404).type('text').send('not found\n') : res.type('application/x-pem-file').send(pem)),
        (err: unknown) => {
          log.error({ err, lease: lease.id, file }, 'metadata: engine TLS material could not be made');
          res.status(500).type('text').send('engine TLS material could not be made\n');
        },
      );
    }
    res.status(404).type('text').send('not found\n');
  });

  app.post(['/m/:lease/:token/phone-home', '/m/:lease/phone-home'], (req, res) => {
    const lease = leaseFor(req);
    if (!lease) return void res.status(404).type('text').send('not found\n');
    d.signals.note(lease.id, 'phone-home');
    d.onPhoneHome?.(lease, req.body);
    res.type('text').send('ok\n');
  });
  return app;
}

/** The metadata service listening on the boot network, bounded like the API: boards are not trusted clients. */
export async function serveMetadata(d: MetadataDeps, host: string, port: number, limits: { metadataConnections: number; headersTimeoutMs: number }): Promise<HttpServer> {
  const server = await listen(metadataApp(d), host, port);
  server.maxConnections = limits.metadataConnections;
  server.headersTimeout = limits.headersTimeoutMs;
  server.requestTimeout = 60_000;
  return server;
}

function sameToken(a: string, b: string): boolean {
  const h = (x: string) => createHash('sha256').update(x).digest();
  return timingSafeEqual(h(a), h(b));
}

/**
 * Shared boards (issue #15, src/shared-boards): a board from the pool becomes the controller's own, its
 * boot gets the engine's TLS material from the metadata service (the key once), and its engine joins the
 * container pool once it answers /_ping over mutual TLS. The engine here is the suite's real dockerd
 * behind a real TLS listener on the board's address and Docker's port, with certificates from the
 * controller's real engine CA; the board's boot itself is the lab's (not in this file).
 */
import { X509Certificate, createPrivateKey, createPublicKey } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { request } from 'node:http';
import { connect as netConnect, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer as tlsServer, type Server as TlsServer } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../../src/api/app.js';
import { sharedBoardRoutes } from '../../src/api/routes/shared-boards.js';
import { ContainerPool } from '../../src/containers/pool.js';
import { containerHost } from '../../src/containers/hosts.js';
import { EngineCa } from '../../src/engine-ca/index.js';
import { ImageImporter } from '../../src/images/import.js';
import { metadataApp, newBootToken } from '../../src/leases/metadata.js';
import { log } from '../../src/log.js';
import { BoardDrains, BootEngineTls, ENGINE_PORT, SharedBoards } from '../../src/shared-boards/index.js';
import { SYSTEM_TENANT, type Lease } from '../../src/store/schema.js';
import { ADMIN, apiHarness } from '../helpers/api-harness.js';
import { until } from '../helpers/until.js';
import { requireContainerTools, startSharedEngine } from '../containers/engines.js';

const KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl a@laptop';
// Loopback addresses stand for the boards' reserved IPs: the metadata service and the engine listener
// see real source and destination addresses.
const board = (i: number) => ({
  id: `sb-${i}`,
  mac: `02:00:00:00:05:${i.toString(16).padStart(2, '0')}`,
  model: 'bananapi',
  arch: 'armv7',
  ip: `127.0.5.${i}`,
  power: { driver: 'command', on: 'true', off: 'true', cycle: 'true' },
  image: 'test',
});

let h: Awaited<ReturnType<typeof apiHarness>>;
let ca: EngineCa;
let tls: BootEngineTls;
let pool: ContainerPool;
let shared: SharedBoards;
let api: (method: string, path: string, body?: unknown, token?: string) => Promise<{ status: number; body: any }>;
let closeApi: () => Promise<void>;
let tenant: string;

beforeAll(async () => {
  h = await apiHarness({ timeouts: { actionMs: 2000, bootMs: 150, osMs: 150 } });
  for (let i = 1; i <= 4; i++) expect((await h.api('POST', '/boards', { ...board(i), ip: `10.77.0.${50 + i}` })).status).toBe(201);
  tenant = (await h.api('POST', '/tenants', { id: 'alice', name: 'Alice' })).body.token;
  ca = await EngineCa.open(join(mkdtempSync(join(tmpdir(), 'engine-ca-')), 'ca'), { controllerId: 'test-controller' });
  tls = new BootEngineTls(async () => ca);
  pool = new ContainerPool([]);
  shared = new SharedBoards({ store: h.store, leases: () => h.leases, pool, ca: async () => ca, tls, bus: h.bus, events: h.events, log, image: 'test', readyTimeoutMs: 20_000, pingIntervalMs: 200 });
  shared.start();
  // The API with the shared-board routes, as the server mounts them.
  const importer = new ImageImporter({ catalog: h.images, dir: mkdtempSync(join(tmpdir(), 'imp-')), log, inUse: () => null });
  const app = createApp({ adminToken: ADMIN, store: h.store, inventory: h.inventory, events: h.events, images: h.images, leases: h.leases, bus: h.bus, log, consoles: h.consoles, importer, extraRoutes: sharedBoardRoutes({ shared, drains: new BoardDrains({ store: h.store, pool, mover: () => { throw new Error('no mover in this test'); }, leases: () => h.leases, events: h.events, log }) }), sharedStatus: (id) => shared.status(id) });
  const server = app.listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
  api = async (method, path, body, token = ADMIN) => {
    const res = await fetch(base + path, { method, headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` }, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : undefined };
  };
  closeApi = async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  };
});
afterAll(async () => {
  shared?.stop();
  pool?.stopHealthChecks();
  await closeApi?.();
  await h?.close();
});

describe('making a board shared', () => {
  it('takes an available board with an engine lease of the controller’s own tenant; tenants’ allocation passes it over', async () => {
    const r = await api('POST', '/boards/sb-1/role', { role: 'shared' });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body.board).toMatchObject({ id: 'sb-1', role: 'shared', state: 'provisioning' });
    expect(r.body.lease).toMatchObject({ tenantId: SYSTEM_TENANT, kind: 'board', boardId: 'sb-1', purpose: 'engine', image: 'test', sshKeys: [] });
    expect(r.body.job.kind).toBe('provision');
    // idempotent: asking again returns the same lease, as the API shows leases (no boot token, no secret)
    const again = await api('POST', '/boards/sb-1/role', { role: 'shared' });
    expect(again.body.lease.id).toBe(r.body.lease.id);
    await h.leases.settle(r.body.job.id);
    const stored = h.store.state.leases.find((l) => l.id === r.body.lease.id)!;
    expect(stored.bootToken).toBeTruthy();
    const shown = JSON.stringify((await api('POST', '/boards/sb-1/role', { role: 'shared' })).body);
    expect(shown).not.toContain(stored.bootToken!);
    expect(shown).not.toContain('bootToken');
    // The engine lease changes only through the board's role: not even the admin reimages or releases it.
    const del = await api('DELETE', `/leases/${r.body.lease.id}`);
    expect(del.status).toBe(409);
    expect(del.body.error).toMatch(/shared board sb-1's engine: it is released only by giving the board back/);
    expect((await api('POST', `/leases/${r.body.lease.id}/reimage`, {})).status).toBe(409);
    // the admin's board list shows the role and the engine's state
    const listed = (await api('GET', '/boards')).body.find((b: { id: string }) => b.id === 'sb-1');
    expect(listed.role).toBe('shared');
    expect(listed.engine.engineLease).toBe(r.body.lease.id);
    // A tenant asking for that very board: refused with the reason, even once the engine job has ended.
    await h.store.update((s) => void (s.boards.find((b) => b.id === 'sb-1')!.state = 'available'));
    const t = await api('POST', '/leases', { image: 'test', board: 'sb-1', sshKeys: [KEY] }, tenant);
    expect(t.status).toBe(409);
    expect(t.body.error).toMatch(/sb-1 is a shared board/);
    // the engine lease is no tenant's: alice does not see it
    expect((await api('GET', `/leases/${r.body.lease.id}`, undefined, tenant)).status).toBe(404);
  });

  it('refuses what would bypass it: the role as board input, the system tenant by name, a busy board', async () => {
    expect((await api('PATCH', '/boards/sb-2', { role: 'shared' })).status).toBe(400);
    expect((await api('POST', '/boards', { ...board(9), role: 'shared' })).status).toBe(400);
    const sys = await api('POST', '/tenants', { id: SYSTEM_TENANT, name: 'x' });
    expect(sys.status).toBe(400);
    expect(JSON.stringify(sys.body)).toMatch(/controller's own tenant/);
    expect((await api('POST', '/boards/sb-2/role', { role: 'bogus' })).status).toBe(400);
    expect((await api('POST', '/boards/nope/role', { role: 'shared' })).status).toBe(404);
    // A configured container host (containers.hosts) with the board's id: refused, never confused with it.
    pool.add(containerHost({ id: 'sb-2', socketPath: '/nonexistent/docker.sock' }));
    const clash = await api('POST', '/boards/sb-2/role', { role: 'shared' });
    expect(clash.status).toBe(409);
    expect(clash.body.error).toMatch(/a configured container host/);
    // and "whole" for a board that is whole leaves that configured host alone
    expect((await api('POST', '/boards/sb-2/role', { role: 'whole' })).status).toBe(200);
    expect(pool.has('sb-2')).toBe(true);
    pool.remove('sb-2');
    await h.store.update((s) => void (s.boards.find((b) => b.id === 'sb-2')!.state = 'maintenance'));
    const busy = await api('POST', '/boards/sb-2/role', { role: 'shared' });
    expect(busy.status).toBe(409);
    expect(busy.body.error).toMatch(/sb-2 is maintenance: only an available board becomes shared/);
    await h.store.update((s) => void (s.boards.find((b) => b.id === 'sb-2')!.state = 'available'));
    // Drain: only a shared board with a registered engine; an unknown board is 404, and an admin call.
    expect((await api('POST', '/boards/sb-2/drain')).status).toBe(409);
    expect((await api('POST', '/boards/nope/drain')).status).toBe(404);
    expect((await api('POST', '/boards/sb-2/drain', undefined, tenant)).status).toBe(403);
    expect((await api('POST', '/boards/sb-2/undrain')).status).toBe(409);
  });

  it('gives a board back: refused while a container lease runs there, then the engine lease is released', async () => {
    const r = await api('POST', '/boards/sb-3/role', { role: 'shared' });
    expect(r.status).toBe(200);
    await h.leases.settle(r.body.job.id);
    // a container lease recorded on this board's engine
    await h.store.update((s) =>
      void s.leases.push({ id: 'l-c0ffee0001', tenantId: 'alice', kind: 'container', image: 'x', sshKeys: [], hostname: 'c', state: 'active', createdAt: new Date().toISOString(), container: { hostId: 'sb-3', containerId: 'abc', memoryMb: 64, cpus: 1 } }),
    );
    const refused = await api('POST', '/boards/sb-3/role', { role: 'whole' });
    expect(refused.status).toBe(409);
    expect(refused.body.error).toMatch(/runs 1 container lease\(s\) \(l-c0ffee0001\)/);
    await h.store.update((s) => void (s.leases.find((l) => l.id === 'l-c0ffee0001')!.state = 'released'));
    const back = await api('POST', '/boards/sb-3/role', { role: 'whole' });
    expect(back.status, JSON.stringify(back.body)).toBe(200);
    expect(back.body.board.role).toBeUndefined();
    expect(back.body.job.kind).toBe('release');
    await h.leases.settle(back.body.job.id);
    expect(h.store.state.leases.find((l) => l.id === r.body.lease.id)!.state).toBe('released');
    expect(h.store.state.boards.find((b) => b.id === 'sb-3')!.state).toBe('available');
    // and tenants may lease it again
    const t = await api('POST', '/leases', { image: 'test', board: 'sb-3', sshKeys: [KEY] }, tenant);
    expect(t.status, JSON.stringify(t.body)).toBe(202);
    await h.leases.settle(t.body.job.id);
  });
});

describe('the engine’s TLS material from the metadata service', () => {
  let srv: ReturnType<ReturnType<typeof metadataApp>['listen']>;
  let port: number;
  const get = (path: string, from: string) =>
    new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, path, localAddress: from }, (res) => {
        let body = '';
        res.on('data', (c) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode!, body }));
      });
      req.on('error', reject);
      req.end();
    });
  const lease = (over: Partial<Lease>): Lease => ({
    id: `l-${Math.random().toString(16).slice(2, 12)}`,
    tenantId: SYSTEM_TENANT,
    kind: 'board',
    boardId: 'sb-4',
    image: 'test',
    sshKeys: [],
    hostname: 'sb-4',
    state: 'provisioning', // the key is only for a first boot, before the lease is active
    createdAt: new Date().toISOString(),
    purpose: 'engine',
    bootToken: newBootToken(),
    ...over,
  });
  const add = async (l: Lease) => (await h.store.update((s) => void s.leases.push(l)), l);
  const files = (l: Lease, from = '127.0.5.4') => Promise.all(['docker-ca.pem', 'docker-server.pem', 'docker-server-key.pem'].map((f) => get(`/m/${l.id}/${l.bootToken}/${f}`, from)));

  beforeAll(async () => {
    const app = metadataApp({ store: h.store, signals: h.signals, boardIp: (id) => (id === 'sb-4' ? '127.0.5.4' : undefined), engineTls: (l, f, ip) => tls.file(l, f, ip) });
    srv = app.listen(0, '127.0.0.1');
    await new Promise((r) => srv.once('listening', r));
    port = (srv.address() as AddressInfo).port;
  });
  afterAll(() => new Promise<void>((r) => srv.close(() => r())));

  it('gives an engine lease’s boot the CA, a certificate for the board’s address, and its key once', async () => {
    const l = structuredClone(await add(lease({})));
    const [caPem, certPem, keyPem] = await files(l);
    expect(caPem).toEqual({ status: 200, body: ca.caPem });
    expect(certPem!.status).toBe(200);
    expect(keyPem!.status).toBe(200);
    const cert = new X509Certificate(certPem!.body);
    expect(cert.checkIssued(new X509Certificate(ca.caPem))).toBe(true);
    expect(cert.checkIP('127.0.5.4')).toBe('127.0.5.4');
    expect(cert.checkIP('127.0.5.5')).toBeUndefined();
    // the key fits the certificate
    expect(createPublicKey(createPrivateKey(keyPem!.body)).export({ format: 'pem', type: 'spki' })).toBe(cert.publicKey.export({ format: 'pem', type: 'spki' }));
    // Asked again in the same boot (a container that read /proc/cmdline): no key; the public parts stay.
    const [ca2, cert2, key2] = await files(l);
    expect([ca2!.status, cert2!.status, key2!.status]).toEqual([200, 200, 404]);
    expect(cert2!.body).toBe(certPem!.body);
    // The next boot (new token): a new key and certificate, once again.
    await h.store.update((s) => void (s.leases.find((x) => x.id === l.id)!.bootToken = newBootToken()));
    const next = h.store.state.leases.find((x) => x.id === l.id)!;
    const [, cert3, key3] = await files(next);
    expect([cert3!.status, key3!.status]).toEqual([200, 200]);
    expect(key3!.body).not.toBe(keyPem!.body);
    expect(cert3!.body).not.toBe(certPem!.body);
    // The old boot's token is worthless now.
    expect(next.bootToken).not.toBe(l.bootToken);
    expect((await files(l)).map((r) => r.status)).toEqual([404, 404, 404]);
  });

  it('hands out no key once the controller has reached the engine with it (or after a restart, for the boot it registered)', async () => {
    const l = await add(lease({}));
    tls.spend(l);
    expect((await files(l)).map((r) => r.status)).toEqual([200, 404, 404]);
  });

  it('hands out no key to a boot of an active engine (a power cycle keeps the key it has)', async () => {
    const l = await add(lease({ state: 'active' }));
    expect((await files(l)).map((r) => r.status)).toEqual([200, 200, 404]);
    // the same lease while still provisioning (a first boot) would have had it
    await h.store.update((s) => void (s.leases.find((x) => x.id === l.id)!.state = 'provisioning'));
    expect((await files(l)).map((r) => r.status)).toEqual([200, 200, 200]);
  });

  it('serves nothing of it for a tenant’s lease, a lease merely marked engine, another address or no token', async () => {
    const tenantLease = await add(lease({ tenantId: 'alice', purpose: undefined }));
    expect((await files(tenantLease)).map((r) => r.status)).toEqual([404, 404, 404]);
    const forged = await add(lease({ tenantId: 'alice' })); // purpose engine but not the controller's tenant
    expect((await files(forged)).map((r) => r.status)).toEqual([404, 404, 404]);
    const l = await add(lease({}));
    expect((await files(l, '127.0.5.9')).map((r) => r.status)).toEqual([404, 404, 404]);
    expect((await get(`/m/${l.id}/docker-server-key.pem`, '127.0.5.4')).status).toBe(404);
    // none of these spent the real boot's key
    expect((await files(l)).map((r) => r.status)).toEqual([200, 200, 200]);
  });
});

describe('registration', () => {
  let proxy: TlsServer | undefined;
  beforeAll(() => requireContainerTools());
  afterAll(() => new Promise<void>((r) => (proxy ? proxy.close(() => r()) : r())));

  it('puts the engine in the pool once it answers /_ping over mutual TLS, and spends the boot’s key', async () => {
    const socket = startSharedEngine();
    const ip = '127.0.5.2';
    // The board's dockerd, as docker-host runs it: TLS on Docker's port, only clients of the engine CA.
    const server = await ca.issueServer({ boardId: 'sb-2', ip });
    const l: Lease = { id: 'l-e0e0e0e0e2', tenantId: SYSTEM_TENANT, kind: 'board', boardId: 'sb-2', image: 'test', sshKeys: [], hostname: 'sb-2', state: 'active', createdAt: new Date().toISOString(), purpose: 'engine', bootToken: newBootToken() };
    await h.store.update((s) => {
      s.boards.find((b) => b.id === 'sb-2')!.ip = ip;
      s.boards.find((b) => b.id === 'sb-2')!.role = 'shared';
      s.leases.push(l);
    });
    // The lease is active but nothing listens yet: waiting, not in the pool.
    h.bus.publish({ type: 'lease', tenantId: SYSTEM_TENANT, data: l });
    await new Promise((r) => setTimeout(r, 600));
    expect(pool.has('sb-2')).toBe(false);
    expect(shared.status('sb-2')).toMatchObject({ engine: 'waiting', engineLease: l.id });
    let handshakes = 0;
    proxy = tlsServer({ key: server.key, cert: server.cert, ca: ca.caPem, requestCert: true, rejectUnauthorized: true }, (c) => {
      handshakes++;
      const up = netConnect(socket);
      c.pipe(up).pipe(c);
      const end = () => (c.destroy(), up.destroy());
      c.on('error', end);
      up.on('error', end);
    });
    await new Promise<void>((r) => proxy!.listen(ENGINE_PORT, ip, () => r()));
    await until('the engine registered', () => pool.has('sb-2'), { timeoutMs: 15_000, intervalMs: 100 });
    expect(handshakes).toBeGreaterThan(0);
    expect(shared.status('sb-2')).toMatchObject({ engine: 'ready' });
    expect(pool.state('sb-2').health).toBe('up'); // it has just answered
    expect((await pool.check(['sb-2']))[0]!.health).toBe('up');
    // the key of that boot is no longer handed out
    expect(await tls.file(l, 'docker-server-key.pem', ip)).toBeUndefined();
    // A restarted server puts the registered engine back in its pool at once, before anything else runs,
    // and the engine answers through it.
    const pool2 = new ContainerPool([]);
    const again = new SharedBoards({ store: h.store, leases: () => h.leases, pool: pool2, ca: async () => ca, tls: new BootEngineTls(async () => ca), bus: h.bus, events: h.events, log, image: 'test', readyTimeoutMs: 1000 });
    expect(await again.restore()).toEqual([`shared board sb-2: engine of lease ${l.id} back in the pool`]);
    expect((await pool2.check(['sb-2']))[0]!.health).toBe('up');
    expect(await again.restore()).toEqual([]); // once
    // A container lease being placed (no board recorded yet) could be landing here: no giving back now.
    await h.store.update((s) => void s.leases.push({ id: 'l-c0ffee0003', tenantId: 'alice', kind: 'container', image: 'x', sshKeys: [], hostname: 'c', state: 'provisioning', createdAt: new Date().toISOString() }));
    const placing = await api('POST', '/boards/sb-2/role', { role: 'whole' });
    expect(placing.status).toBe(409);
    expect(placing.body.error).toMatch(/l-c0ffee0003 are being placed/);
    expect(pool.has('sb-2')).toBe(true);
    await h.store.update((s) => void (s.leases.find((l) => l.id === 'l-c0ffee0003')!.state = 'released'));
    // The engine lease fails while a container is recorded there: marked down (failover moves it), not dropped.
    await h.store.update((s) => void s.leases.push({ id: 'l-c0ffee0004', tenantId: 'alice', kind: 'container', image: 'x', sshKeys: [], hostname: 'c', state: 'active', createdAt: new Date().toISOString(), container: { hostId: 'sb-2', containerId: 'c4', memoryMb: 64, cpus: 1 } }));
    h.bus.publish({ type: 'lease', tenantId: SYSTEM_TENANT, data: { ...l, state: 'error' } });
    expect(pool.has('sb-2')).toBe(true);
    expect(pool.state('sb-2').markedDown).toBe(true);
    await h.store.update((s) => void (s.leases.find((x) => x.id === 'l-c0ffee0004')!.state = 'released'));
    // the lease ends: the engine leaves the pool
    await h.store.update((s) => void (s.leases.find((x) => x.id === l.id)!.state = 'released'));
    h.bus.publish({ type: 'lease', tenantId: SYSTEM_TENANT, data: { ...l, state: 'released' } });
    expect(pool.has('sb-2')).toBe(false);
  });
});

import { EventEmitter } from 'node:events';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { attachLeaseConsoles } from '../../src/api/console-socket.js';
import { SUBPROTOCOL } from '../../src/console/index.js';
import { ContainerLeaseDriver } from '../../src/containers/driver.js';
import { ContainerHost } from '../../src/containers/host.js';
import { ContainerLeasePort } from '../../src/containers/lease-port.js';
import { ContainerPool } from '../../src/containers/pool.js';
import { OutputWatcher } from '../../src/util/wait-for.js';
import { ADMIN, apiHarness } from '../helpers/api-harness.js';
import { armhfImage, requireContainerTools, sshKeyPair, startSharedEngine, uniq, waitForSsh, type KeyPair } from '../containers/engines.js';

// Container leases through the lease API, on a real Docker engine running an armhf userland: the
// same endpoints as boards (show, reimage, power, release, console), the kind:any fallback when every
// board is leased, and tenant B kept away from A's container.
const run = uniq();
let h: Awaited<ReturnType<typeof apiHarness>>;
let port: ContainerLeasePort;
let ws: ReturnType<typeof attachLeaseConsoles>;
let tokenA = '';
let tokenB = '';
let keyA: KeyPair;

beforeAll(async () => {
  requireContainerTools();
  const socketPath = startSharedEngine();
  const image = armhfImage();
  keyA = sshKeyPair('tenant-a');
  const host = new ContainerHost({ id: 'shared-local', socketPath, sshHost: '127.0.0.1', publishIp: '127.0.0.1', platforms: ['linux/arm/v7'], sshPortRange: [23400, 23599] });
  // The host's own file system under this engine may have no quota: best-effort (quota: shared-pool.test.ts).
  port = new ContainerLeasePort(new ContainerLeaseDriver({ pool: new ContainerPool([host]), images: [image], diskQuota: 'best-effort' }), [image]);
  // A tenant's containers together: at most 256 MiB and 2 CPUs.
  h = await apiHarness({ containers: port, containerQuota: { memoryMb: 256, cpus: 2 }, timeouts: { actionMs: 5000, bootMs: 120_000, osMs: 200 } });
  ws = attachLeaseConsoles(h.server, { store: h.store, adminToken: ADMIN, consoles: h.consoles, bus: h.bus, limits: { consolesPerToken: 16, viewersPerConsole: 32 } });
  tokenA = (await h.api('POST', '/tenants', { id: `a-${run}`, name: 'A' })).body.token;
  tokenB = (await h.api('POST', '/tenants', { id: `b-${run}`, name: 'B' })).body.token;
  // one board, leased away below
  await h.api('POST', '/boards', { id: 'only', mac: '02:00:00:00:0c:01', model: 'bananapi', arch: 'armv7', ip: '10.77.0.200', power: { driver: 'command', on: 'true', off: 'true' }, image: 'test' });
}, 600_000);

afterAll(async () => {
  for (const l of h?.store.state.leases ?? []) if (l.state !== 'released') await h.leases.settle((await h.leases.release('system', l.id)).job.id).catch(() => {});
  await ws?.close();
  await h?.close();
});

async function settled(r: { status: number; body: any }) {
  expect(r.status).toBe(202);
  const job = await h.leases.settle(r.body.job.id);
  expect([job.state, job.error ?? '']).toEqual(['succeeded', '']);
  return r.body.lease.id as string;
}

describe('container leases through the lease API', () => {
  let leaseId = '';

  it('kind container: an armv7 userland reachable by ssh with the tenant’s key', async () => {
    leaseId = await settled(await h.api('POST', '/leases', { kind: 'container', image: 'armhf-base', memory: 64, cpus: 0.5, sshKeys: [keyA.publicKey] }, tokenA));
    const lease = (await h.api('GET', `/leases/${leaseId}`, undefined, tokenA)).body;
    expect(lease).toMatchObject({ kind: 'container', state: 'active', container: { hostId: 'shared-local', memoryMb: 64, cpus: 0.5 } });
    const r = await waitForSsh(keyA.privateKey, '127.0.0.1', lease.container.sshPort, 'uname -m');
    expect(r.stdout.trim()).toBe('armv7l');
  });

  it('a tenant\'s containers together stay within its memory and CPU quota; another tenant has its own', async () => {
    // A holds 64 MiB and 0.5 CPU (the lease above).
    const tooBig = await h.api('POST', '/leases', { kind: 'container', image: 'armhf-base', memory: 200, cpus: 0.5 }, tokenA);
    expect(tooBig).toMatchObject({ status: 403, body: { error: `container quota reached: tenant a-${run} holds 64 MiB in containers and asks for 200 more (limits.containerMemoryMbPerTenant is 256)` } });
    const tooMany = await h.api('POST', '/leases', { kind: 'container', image: 'armhf-base', memory: 64, cpus: 1.75 }, tokenA);
    expect(tooMany).toMatchObject({ status: 403, body: { error: `container quota reached: tenant a-${run} holds 0.5 CPUs in containers and asks for 1.75 more (limits.containerCpusPerTenant is 2)` } });
    // Nothing was made for the refusals; B's quota is its own (checked, not created: its allocation is the refusal's opposite).
    expect(h.store.state.leases.filter((l) => l.tenantId === `a-${run}` && l.kind === 'container')).toHaveLength(1);
    const bTooBig = await h.api('POST', '/leases', { kind: 'container', image: 'armhf-base', memory: 300 }, tokenB);
    expect(bTooBig).toMatchObject({ status: 403, body: { error: expect.stringContaining(`tenant b-${run} holds 0 MiB`) } });
  });

  it('its console works over the same WebSocket API as a board’s', async () => {
    const sock = new WebSocket(`${h.base.replace(/^http/, 'ws')}/leases/${leaseId}/console`, [SUBPROTOCOL], { headers: { authorization: `Bearer ${tokenA}` } });
    const bytes = new EventEmitter(); // binary frames are the console's bytes; text frames are control messages
    sock.on('message', (data, isBinary) => isBinary && bytes.emit('data', data));
    const out = new OutputWatcher(bytes);
    await new Promise((res, rej) => sock.once('open', res).once('error', rej));
    sock.send(Buffer.from('echo CONTAINER-$((6*7))\n'));
    await out.waitFor('CONTAINER-42', 30_000, `container console of ${leaseId}`);
    sock.close();
  });

  it('tenant B can neither see nor touch A’s container; A can power and reimage it', async () => {
    for (const [m, p, b] of [
      ['GET', `/leases/${leaseId}`, undefined],
      ['POST', `/leases/${leaseId}/power`, { action: 'off' }],
      ['POST', `/leases/${leaseId}/reimage`, {}],
      ['DELETE', `/leases/${leaseId}`, undefined],
      ['GET', `/leases/${leaseId}/console/log`, undefined],
    ] as const) {
      expect([m, p, (await h.api(m, p, b, tokenB)).status]).toEqual([m, p, 404]);
    }
    const sock = new WebSocket(`${h.base.replace(/^http/, 'ws')}/leases/${leaseId}/console`, [SUBPROTOCOL], { headers: { authorization: `Bearer ${tokenB}` } });
    const status = await new Promise<number>((res) => sock.once('unexpected-response', (_req, r) => res(r.statusCode!)).once('open', () => res(101)));
    expect(status).toBe(404);
    await settled(await h.api('POST', `/leases/${leaseId}/power`, { action: 'cycle' }, tokenA));
    await settled(await h.api('POST', `/leases/${leaseId}/reimage`, {}, tokenA));
  });

  it('kind any falls back to a container when every board is leased', async () => {
    const board = await h.api('POST', '/leases', { kind: 'board', image: 'test' }, tokenB); // takes the only board (it never boots here)
    expect(board.body.lease.boardId).toBe('only');
    const any = await h.api('POST', '/leases', { kind: 'any', image: 'test', memory: 32 }, tokenB);
    expect(any.status).toBe(202);
    expect(any.body.lease).toMatchObject({ kind: 'container', image: 'armhf-base' });
    await settled(any);
    expect((await h.api('POST', '/leases', { kind: 'board', image: 'test' }, tokenB)).status).toBe(409);
  });

  it('release removes the container', async () => {
    const lease = h.store.state.leases.find((l) => l.id === leaseId)!;
    await settled(await h.api('DELETE', `/leases/${leaseId}`, undefined, tokenA));
    expect(lease.container?.containerId).toBeTruthy();
    await expect(port.driver.inspect(leaseId)).rejects.toMatchObject({ status: 404 });
  });
});

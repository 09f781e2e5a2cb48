/**
 * Issue #15 item 2, end to end in the lab, all real: a lab board becomes shared (POST
 * /v1/boards/:id/role) → the server's engine lease boots images/docker-host on it from a CoW iSCSI root
 * with a blank second LUN (Docker's btrfs data-root) → its boot fetches the engine's TLS from the
 * metadata service → dockerd on the board answers /_ping over mutual TLS → the engine joins the pool.
 * Then tenants' container leases land on that board (dockerd on the emulated ARM board, not on the
 * controller): ssh with the tenant's key, a memory limit that kills past it while the board lives on, a
 * disk quota that gives EDQUOT, and two tenants who reach neither each other, the board nor the boot
 * network.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, REPO_ROOT } from '../../src/config.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { armhfImage, requireContainerTools, ssh, sshKeyPair, waitForSsh, type KeyPair } from '../containers/engines.js';
import { buildLabImage } from '../helpers/lab-server.js';
import { requireTools } from '../helpers/tools.js';
import { until } from '../helpers/until.js';
import { freeControlPort, freePort } from '../storage/tgt-fixture.js';

const BOOT_IP = '10.94.0.1';
/** From the role change: clone, U-Boot, TFTP, the armmp kernel, iSCSI login, systemd, the data disk's mkfs, dockerd, all emulated (TCG). */
const READY_TIMEOUT_MS = 600_000;

let server: RunningServer;
let metadataPort = 0;
let boardIp = '';
const work = mkdtempSync(join(tmpdir(), 'shared-board-'));
let keyA: KeyPair;
let keyB: KeyPair;
let tokenA = '';
let tokenB = '';
const leaseOf: Record<string, any> = {};

async function api(method: string, path: string, body?: unknown, token = server.adminToken) {
  const r = await fetch(`${server.apiUrl}/v1${path}`, { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: r.status, body: (await r.json().catch(() => undefined)) as any };
}

async function settled(r: { status: number; body: any }, timeoutMs = 300_000) {
  expect(r.status, JSON.stringify(r.body)).toBe(202);
  await until('the job ended', async () => ['succeeded', 'failed', 'cancelled'].includes((await api('GET', `/jobs/${r.body.job.id}`)).body?.state), { timeoutMs, intervalMs: 500 });
  const job = (await api('GET', `/jobs/${r.body.job.id}`)).body;
  expect([job.state, job.error ?? ''], JSON.stringify(job)).toEqual(['succeeded', '']);
  return (await api('GET', `/leases/${r.body.lease.id}`)).body;
}

const inA = (cmd: string, timeoutMs = 60_000) => ssh(keyA.privateKey, boardIp, leaseOf.a.container.sshPort, cmd, timeoutMs);
const inB = (cmd: string, timeoutMs = 60_000) => ssh(keyB.privateKey, boardIp, leaseOf.b.container.sshPort, cmd, timeoutMs);

beforeAll(async () => {
  requireContainerTools();
  requireTools('qemu-system-arm', 'mkimage', 'tgtd', 'tgtadm', 'debootstrap');
  buildLabImage('test');
  execFileSync('bash', [join(REPO_ROOT, 'images/docker-host/build.sh')], { stdio: 'ignore', timeout: 1_800_000 });
  armhfImage(); // the tenants' container image (images/container-armhf), imported into the board's engine on first use
  keyA = sshKeyPair('tenant-a');
  keyB = sshKeyPair('tenant-b');
  metadataPort = await freePort('0.0.0.0');
  server = await startServer(
    loadConfig(undefined, {
      dataDir: join(work, 'data'),
      api: '127.0.0.1:0',
      bootIp: BOOT_IP,
      subnet: '10.94.0.0/24',
      metadata: { port: metadataPort },
      gateway: { listen: '127.0.0.1:0' },
      lab: { enabled: true, boards: 1, netns: `dzs-${randomBytes(3).toString('hex')}`, powerOn: false },
      storage: { enabled: true, dir: join(work, 'storage'), tgt: { controlPort: freeControlPort() } },
      leases: { osTimeoutMs: READY_TIMEOUT_MS },
      containers: { diskMb: 64, shared: { dataDiskMb: 2048, readyTimeoutS: 300 } },
    }),
  );
  boardIp = server.inventory.list()[0]!.ip;
  tokenA = (await api('POST', '/tenants', { id: 'sara', name: 'Sara' })).body.token;
  tokenB = (await api('POST', '/tenants', { id: 'tom', name: 'Tom' })).body.token;
}, 1_800_000);

afterAll(async () => {
  for (const l of server?.store.state.leases ?? []) {
    if (l.kind === 'container' && l.state !== 'released') await server.leases.settle((await server.leases.release('system', l.id)).job.id).catch(() => {});
  }
  await server?.stop({ labDown: true });
}, 300_000);

describe('a lab board as a shared board', () => {
  it('becomes shared: boots docker-host on iSCSI with its data LUN, and its engine joins the pool over mutual TLS', async () => {
    const started = Date.now();
    const r = await api('POST', '/boards/lab-1/role', { role: 'shared' });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body.lease).toMatchObject({ purpose: 'engine', tenantId: 'dozen-system', image: 'docker-host' });
    await until('the engine is ready', async () => (await api('GET', '/boards/lab-1/engine')).body?.engine === 'ready', {
      timeoutMs: READY_TIMEOUT_MS,
      intervalMs: 2000,
      detail: async () => JSON.stringify((await api('GET', '/boards/lab-1/engine')).body),
    });
    const readyS = (Date.now() - started) / 1000;
    console.log(`shared board ready (role change → engine in the pool): ${readyS.toFixed(1)} s`);
    const engine = (await api('GET', '/boards/lab-1/engine')).body;
    expect(server.store.state.leases.find((l) => l.id === engine.engineLease)!.iscsi!.dataDisk).toBeTruthy();
    const listed = (await api('GET', '/boards')).body.find((b: { id: string }) => b.id === 'lab-1');
    expect(listed).toMatchObject({ role: 'shared', state: 'active', engine: { engine: 'ready' } });
    expect((await api('GET', '/health/detail')).body.docker).toEqual([expect.objectContaining({ id: 'lab-1', health: 'up' })]);
  }, READY_TIMEOUT_MS + 60_000);

  it('a tenant’s container lease lands on it and answers ssh with the tenant’s key, on the ARM board', async () => {
    const t0 = Date.now();
    leaseOf.a = await settled(await api('POST', '/leases', { kind: 'container', image: 'armhf-base', memory: 64, cpus: 0.5, sshKeys: [keyA.publicKey] }, tokenA));
    console.log(`container lease on the shared board: ${((Date.now() - t0) / 1000).toFixed(1)} s from request to active`);
    expect(leaseOf.a).toMatchObject({ kind: 'container', state: 'active', container: { hostId: 'lab-1', memoryMb: 64 } });
    const r = await waitForSsh(keyA.privateKey, boardIp, leaseOf.a.container.sshPort, 'uname -m; cat /sys/fs/cgroup/memory.max', 60_000);
    expect(r.stdout).toMatch(/^armv7l\n/);
    expect(r.stdout).toMatch(new RegExp(`^${64 * 2 ** 20}$`, 'm'));
  }, 600_000);

  it('its memory limit holds: a process past 64 MiB is killed, the container and the board live on', async () => {
    // awk doubles a string until the cgroup's OOM killer ends it.
    const r = await inA("awk 'BEGIN { s = \"x\"; for (i = 0; i < 40; i++) s = s s; print length(s) }'; echo rc=$?", 180_000);
    expect(r.stdout).toMatch(/rc=(137|1\d\d)/);
    expect((await inA('cat /sys/fs/cgroup/memory.events')).stdout).toMatch(/^oom_kill [1-9]/m);
    expect((await inA('echo alive')).stdout.trim()).toBe('alive');
    expect((await api('GET', '/boards/lab-1/engine')).body.engine).toBe('ready');
  }, 300_000);

  it('its disk quota holds: writing past it fails with EDQUOT', async () => {
    const r = await inA('dd if=/dev/zero of=/big bs=1M count=200 2>&1; sync; rm -f /big; echo done', 180_000);
    expect(r.stdout).toMatch(/Disk quota exceeded/);
    expect(r.stdout).toMatch(/done/);
  }, 300_000);

  it('two tenants’ containers reach neither each other, the board’s Docker API and sshd, nor the controller’s services', async () => {
    leaseOf.b = await settled(await api('POST', '/leases', { kind: 'container', image: 'armhf-base', memory: 64, cpus: 0.5, sshKeys: [keyB.publicKey] }, tokenB));
    expect(leaseOf.b.container.hostId).toBe('lab-1');
    await waitForSsh(keyB.privateKey, boardIp, leaseOf.b.container.sshPort, 'true', 60_000);
    const ipOf = async (run: typeof inA) => /inet (\d+\.\d+\.\d+\.\d+)\//.exec((await run('ip -4 addr show dev eth0')).stdout)?.[1];
    const ipA = await ipOf(inA);
    const ipB = await ipOf(inB);
    expect(ipA).toBeTruthy();
    expect(ipB).toBeTruthy();
    // Each target is one a tenant must not reach from its container. busybox nc (as src/containers/fence.ts
    // probes): -w bounds the connect, `-e true` exits 0 once connected; a refused or timed-out connect is 1.
    const probe = (run: typeof inA, targets: string[]) => run(targets.map((t) => `nc -w 3 ${t.replace(':', ' ')} -e true </dev/null >/dev/null 2>&1; echo "${t} rc=$?"`).join('; '), 180_000);
    const fromA = await probe(inA, [`${ipB}:22`, `${boardIp}:2376`, `${boardIp}:22`, `${BOOT_IP}:${metadataPort}`, `${BOOT_IP}:3260`]);
    const fromB = await probe(inB, [`${ipA}:22`, `${boardIp}:2376`]);
    for (const line of [...fromA.stdout.trim().split('\n'), ...fromB.stdout.trim().split('\n')]) expect(line).toMatch(/ rc=1$/);
    expect(fromA.stdout.trim().split('\n')).toHaveLength(5);
    // Each container still reaches its own sshd: the probe can connect.
    expect((await probe(inA, ['127.0.0.1:22'])).stdout).toMatch(/ rc=0$/m);
  }, 600_000);
});

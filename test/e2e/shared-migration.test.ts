/**
 * Issue #15 item 3, end to end in the lab, all real: two lab boards become shared (docker-host on the
 * emulated ARM board). A tenant's container lease gets a persistent /data (an iSCSI LUN on the
 * controller, logged in by the board, ext4). `drain` moves it to the other board with its root-fs changes
 * and /data, same lease id and key; then the board it moved to loses power in the middle of work, and
 * failover recreates the lease on the first board with everything written and fsynced before the cut.
 * Every move goes through the lease state machine: the bus (what the tenant's event stream and the UI
 * read) sees migrating → active.
 */
import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, REPO_ROOT } from '../../src/config.js';
import { containerRecords } from '../../src/containers/lease-port.js';
import { QemuPower } from '../../src/power/qemu.js';
import { volumeMountPath } from '../../src/shared-boards/board-volumes.js';
import { runOnBoard } from '../../src/shared-boards/volume-helper.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { armhfImage, requireContainerTools, ssh, sshKeyPair, waitForSsh, type KeyPair } from '../containers/engines.js';
import { buildLabImage } from '../helpers/lab-server.js';
import { requireTools } from '../helpers/tools.js';
import { until } from '../helpers/until.js';
import { freeControlPort, freePort } from '../storage/tgt-fixture.js';

const BOOT_IP = '10.92.0.1';
const READY_TIMEOUT_MS = 900_000;

let server: RunningServer;
const work = mkdtempSync(join(tmpdir(), 'shared-migration-'));
let key: KeyPair;
let token = '';
let leaseId = '';
/** Lease states the bus carried for the tenant's lease, in order (what its SSE stream shows). */
const seen: string[] = [];
let blobSum = '';

async function api(method: string, path: string, body?: unknown, t = server.adminToken) {
  const r = await fetch(`${server.apiUrl}/v1${path}`, { method, headers: { authorization: `Bearer ${t}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: r.status, body: (await r.json().catch(() => undefined)) as any };
}

/** The real `dozen` command, logged in as the admin. */
function dozen(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const env = { ...process.env, DOZEN_LOGIN_FILE: join(work, 'login.json'), DOZEN_URL: server.apiUrl, DOZEN_TOKEN: server.adminToken };
  return new Promise((resolve) => {
    execFile(join(REPO_ROOT, 'bin/dozen'), args, { env, timeout: 900_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

const lease = () => server.store.state.leases.find((l) => l.id === leaseId)!;
const boardIp = (id: string) => server.inventory.list().find((b) => b.id === id)!.ip;
/** Runs `cmd` in the tenant's container wherever the lease now is, through its published SSH port. */
const inLease = (cmd: string, timeoutMs = 120_000) => ssh(key.privateKey, lease().container!.sshHost as string, lease().container!.sshPort!, cmd, timeoutMs);

beforeAll(async () => {
  requireContainerTools();
  requireTools('qemu-system-arm', 'mkimage', 'tgtd', 'tgtadm', 'debootstrap');
  buildLabImage('test');
  execFileSync('bash', [join(REPO_ROOT, 'images/docker-host/build.sh')], { stdio: 'ignore', timeout: 1_800_000 });
  armhfImage();
  key = sshKeyPair('tenant-m');
  server = await startServer(
    loadConfig(undefined, {
      dataDir: join(work, 'data'),
      api: '127.0.0.1:0',
      bootIp: BOOT_IP,
      subnet: '10.92.0.0/24',
      metadata: { port: await freePort('0.0.0.0') },
      gateway: { listen: '127.0.0.1:0' },
      lab: { enabled: true, boards: 2, netns: `dzm-${randomBytes(3).toString('hex')}`, powerOn: false },
      storage: { enabled: true, dir: join(work, 'storage'), tgt: { controlPort: freeControlPort() } },
      leases: { osTimeoutMs: READY_TIMEOUT_MS },
      // Failover on, and a dead board noticed within a few seconds.
      containers: { diskMb: 64, failover: true, healthIntervalMs: 2000, failThreshold: 2, pingTimeoutMs: 2000, shared: { dataDiskMb: 2048, volumeMb: 64, readyTimeoutS: 400 } },
    }),
  );
  token = (await api('POST', '/tenants', { id: 'mia', name: 'Mia' })).body.token;
  server.bus.subscribe((ev) => {
    if (ev.type === 'lease' && (ev.data as { id: string }).id === leaseId) seen.push((ev.data as { state: string }).state);
  });
}, 1_800_000);

afterAll(async () => {
  if (leaseId && lease()?.state !== 'released') await server.leases.settle((await server.leases.release('system', leaseId)).job.id).catch(() => {});
  await server?.stop({ labDown: true });
}, 300_000);

describe('container leases move between shared boards and keep their data', () => {
  it('two lab boards become shared', async () => {
    const started = Date.now();
    for (const id of ['lab-1', 'lab-2']) expect((await api('POST', `/boards/${id}/role`, { role: 'shared' })).status).toBe(200);
    await until('both engines are ready', async () => (await Promise.all(['lab-1', 'lab-2'].map(async (id) => (await api('GET', `/boards/${id}/engine`)).body?.engine))).every((e) => e === 'ready'), {
      timeoutMs: READY_TIMEOUT_MS,
      intervalMs: 2000,
      detail: async () => JSON.stringify(await Promise.all(['lab-1', 'lab-2'].map(async (id) => (await api('GET', `/boards/${id}/engine`)).body))),
    });
    console.log(`two shared boards ready: ${((Date.now() - started) / 1000).toFixed(1)} s`);
  }, READY_TIMEOUT_MS + 60_000);

  it('a container lease gets a persistent /data: its own LUN, ext4, on the board it runs on', async () => {
    const t0 = Date.now();
    const r = await api('POST', '/leases', { kind: 'container', image: 'armhf-base', memory: 64, cpus: 0.5, sshKeys: [key.publicKey] }, token);
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    leaseId = r.body.lease.id;
    await until('the lease is active', async () => lease().state === 'active', { timeoutMs: 600_000, intervalMs: 1000, detail: async () => `${lease().state} ${lease().stateReason ?? ''}` });
    console.log(`container lease with /data: ${((Date.now() - t0) / 1000).toFixed(1)} s from request to active`);
    const on = lease().container!.hostId;
    expect(lease().volume).toMatchObject({ boardId: on, initiatorAddress: boardIp(on) });
    // The tenant sees where its volume is, never its secrets.
    const mine = (await api('GET', `/leases/${leaseId}`, undefined, token)).body;
    expect(mine.volume).toEqual({ boardId: on, iqn: lease().volume!.iqn });
    await waitForSsh(key.privateKey, lease().container!.sshHost as string, lease().container!.sshPort!, 'true', 60_000);
    const m = await inLease('grep " /data " /proc/mounts');
    expect(m.stdout).toMatch(/ \/data ext4 rw/);
    // Written and fsynced: 1 MiB of random bytes on /data, and a change to the container's own root.
    const w = await inLease('dd if=/dev/urandom of=/data/blob bs=64k count=16 conv=fsync 2>/dev/null && md5sum /data/blob && echo kept > /root/rootfs-change && sync');
    blobSum = w.stdout.trim().split(/\s+/)[0]!;
    expect(blobSum).toMatch(/^[0-9a-f]{32}$/);
  }, 700_000);

  it('drain moves it to the other board: same lease and key, its root-fs changes and its /data', async () => {
    const from = lease().container!.hostId;
    const to = from === 'lab-1' ? 'lab-2' : 'lab-1';
    seen.length = 0;
    // The operator's command: it starts the drain, follows it, and prints what moved.
    const cli = await dozen('boards', 'drain', from, '--json');
    expect(cli.code, cli.stderr).toBe(0);
    const drain = JSON.parse(cli.stdout);
    expect(drain, JSON.stringify(drain)).toMatchObject({ state: 'done', failed: [], moved: [{ leaseId, to }] });
    expect((await api('GET', `/boards/${from}/engine`)).body.drain).toEqual(drain);
    console.log(`drain: downtime ${(drain.moved[0].downtimeMs / 1000).toFixed(1)} s, ${drain.moved[0].bytesMoved} bytes moved (committed image); phases ${JSON.stringify(drain.moved[0].phasesMs)}`);
    expect(lease()).toMatchObject({ state: 'active', container: { hostId: to }, volume: { boardId: to } });
    expect(seen).toEqual(['migrating', 'active']);
    const r2 = await waitForSsh(key.privateKey, lease().container!.sshHost as string, lease().container!.sshPort!, 'md5sum /data/blob; cat /root/rootfs-change', 60_000);
    expect(r2.stdout).toContain(blobSum);
    expect(r2.stdout).toMatch(/^kept$/m);
    // The drained board takes no new leases until it is put back in service.
    expect((await api('GET', `/boards/${from}/engine`)).body.engine).toBe('down');
    expect((await api('POST', `/boards/${from}/undrain`)).status).toBe(200);
    expect((await api('GET', `/boards/${from}/engine`)).body.engine).toBe('ready');
  }, 900_000);

  it('a power cut on its board: failover recreates it on the other board with everything fsynced before the cut', async () => {
    const dead = lease().container!.hostId;
    const survivor = dead === 'lab-1' ? 'lab-2' : 'lab-1';
    const oldTarget = lease().volume!.iqn;
    // More work, fsynced, then the cut with no warning.
    const w = await inLease('dd if=/dev/urandom of=/data/blob bs=64k count=16 conv=fsync 2>/dev/null && md5sum /data/blob');
    blobSum = w.stdout.trim().split(/\s+/)[0]!;
    expect(blobSum).toMatch(/^[0-9a-f]{32}$/);
    seen.length = 0;
    const cut = Date.now();
    await new QemuPower(server.lab!.boards().find((b) => b.id === dead)!.qmp).off();
    await until('the lease is active on the other board', async () => lease().state === 'active' && lease().container?.hostId === survivor, {
      timeoutMs: 600_000,
      intervalMs: 1000,
      detail: async () => `${lease().state} on ${lease().container?.hostId}: ${lease().stateReason ?? ''}`,
    });
    const r = await waitForSsh(key.privateKey, lease().container!.sshHost as string, lease().container!.sshPort!, 'md5sum /data/blob', 120_000);
    console.log(`failover: ${((Date.now() - cut) / 1000).toFixed(1)} s from the power cut to the tenant's ssh on ${survivor}`);
    expect(r.stdout).toContain(blobSum);
    expect(seen).toEqual(['migrating', 'active']);
    // Fenced: the dead board's target is gone (its session closed); only the survivor's exists.
    const targets = (await server.storage!.exporter.list()).map((t) => t.iqn);
    expect(targets).not.toContain(oldTarget);
    expect(targets).toContain(lease().volume!.iqn);
    expect(lease().volume!.boardId).toBe(survivor);
  }, 900_000);

  it('a board that lost the mount (as after a reboot): /data refuses writes, never the board’s disk, until the controller mounts it again', async () => {
    const on = lease().container!.hostId;
    const host = server.containers.pool.get(on);
    const helper = server.containers.images[0]!.ref;
    const mnt = volumeMountPath(leaseId);
    // The board forgets the mount and the engine restarts the container, as a reboot does.
    const lost = await runOnBoard(host, helper, 'test: drop the mount', 'umount "$MNT" && iscsiadm -m node -T "$IQN" -u >/dev/null && echo dropped', { MNT: mnt, IQN: lease().volume!.iqn });
    expect(lost).toMatchObject({ code: 0, output: 'dropped' });
    await host.call('restart', (d) => d.getContainer(lease().container!.containerId).restart({ t: 2 }));
    const w = await waitForSsh(key.privateKey, lease().container!.sshHost as string, lease().container!.sshPort!, 'ls /data; touch /data/x 2>&1; echo rc=$?', 120_000);
    expect(w.stdout).not.toContain('blob');
    // Refused: the mount point is immutable while nothing is mounted on it (EPERM), and the board's root
    // owns it, not the container's remapped root (EACCES): nothing lands on the board's own disk.
    expect(w.stdout).toMatch(/(Operation not permitted|Permission denied)[\s\S]*rc=1/);
    // What the server does when a board answers again (and at start).
    const lines = await server.containers.driver.reattachVolumes(on, containerRecords(server.store.state.leases));
    expect(lines).toEqual([`lease ${leaseId}: /data mounted again on ${on}, container restarted`]);
    const r = await waitForSsh(key.privateKey, lease().container!.sshHost as string, lease().container!.sshPort!, 'md5sum /data/blob', 120_000);
    expect(r.stdout).toContain(blobSum);
    // Mounted already: nothing to do, nothing restarted.
    expect(await server.containers.driver.reattachVolumes(on, containerRecords(server.store.state.leases))).toEqual([]);
  }, 600_000);
});

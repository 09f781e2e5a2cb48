/**
 * #18 point 3: a second server, or a restored state file, must not destroy the disks of leases it does not
 * know. Real server, lab board (QEMU, real U-Boot), real tgtd and a btrfs store on a loop file.
 *   - a server with a fresh --data-dir and the same storage dir refuses to start, saying how to adopt;
 *   - an older state file (made before a lease) quarantines the lease's disk instead of destroying it;
 *     the admin lists and removes it;
 *   - a lease whose disk is gone becomes visibly `error`, with the reason.
 */
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { Lab } from '../../src/lab/lab.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { labConfig } from '../helpers/lab-server.js';
import { requireRoot, requireTools } from '../helpers/tools.js';
import { makeLoopFs, type LoopFs } from '../storage/loop-fs.js';
import { freeControlPort } from '../storage/tgt-fixture.js';

let fs: LoopFs;
let server: RunningServer | undefined;
const work = mkdtempSync(join(tmpdir(), 'dozen-ownership-'));

beforeAll(() => {
  requireRoot();
  requireTools('qemu-system-arm', 'tgtd', 'tgtadm', 'mkfs.btrfs');
  fs = makeLoopFs('btrfs', 1024);
}, 120_000);

afterAll(async () => {
  await server?.stop();
  // the lab outlives each server: bring it down through a server that owns it
  await new Lab({ ...config.lab, bootIp: config.bootIp, subnet: config.subnet, stateDir: join(work, 'a', 'lab') }).down();
  fs?.cleanup();
  rmSync(work, { recursive: true, force: true });
});

// One lab for every server of this test (each start adopts the running lab, as after a restart).
const config = labConfig({ net: 89, prefix: 'dzo', boards: 1, extra: { storage: { enabled: true } } });

function serverConfig(dataDir: string, extra: Record<string, unknown> = {}) {
  return loadConfig(undefined, { ...config, dataDir, storage: { ...config.storage, dir: fs.dir, tgt: { ...config.storage.tgt, controlPort: freeControlPort() } }, ...extra });
}

async function api(method: string, path: string, body?: unknown, token = server!.adminToken) {
  const r = await fetch(`${server!.apiUrl}/v1${path}`, { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: r.status, body: (await r.json().catch(() => undefined)) as any };
}

describe('storage that cannot be destroyed by mistake', () => {
  it('a second server refuses the storage; an old state quarantines; a missing disk fails its lease', async () => {
    const dataA = join(work, 'a');
    server = await startServer(serverConfig(dataA));
    const controllerId = server.store.state.controllerId!;
    expect(controllerId).toMatch(/^[0-9a-f-]{36}$/);
    expect(JSON.parse(readFileSync(join(fs.dir, 'controller.json'), 'utf8')).controllerId).toBe(controllerId);
    // "yesterday's backup": the state before the lease
    // A running server's state is the file and its journal (README "State"): a backup takes both.
    copyFileSync(join(dataA, 'state.json'), join(work, 'state-before.json'));
    copyFileSync(join(dataA, 'state.json.journal'), join(work, 'state-before.json.journal'));

    const tenant = (await api('POST', '/tenants', { id: 'erin', name: 'Erin' })).body.token;
    const made = (await api('POST', '/leases', { image: 'test', board: 'lab-1' }, tenant)).body;
    expect((await server.leases.settle(made.job.id)).state).toBe('succeeded');
    const diskPath = server.storage!.store.diskPath(made.lease.id);
    expect(existsSync(diskPath)).toBe(true);
    await server.stop(); // the lab (and the booted board) keep running, as real boards would

    // 1. A second server: fresh --data-dir, same storage dir. It refuses, and touches nothing.
    server = undefined;
    const err = await startServer(serverConfig(join(work, 'b'))).then(
      () => null,
      (e: Error) => e,
    );
    expect(err?.message).toMatch(new RegExp(`storage ${fs.dir} belongs to controller ${controllerId}, but this server's state \\(.*/b/state.json\\) is new`));
    expect(err?.message).toMatch(/storage\.adopt=true/);
    expect(existsSync(diskPath)).toBe(true);

    // 2. The first server restarted with its own state: the lease is active with its disk.
    server = await startServer(serverConfig(dataA));
    expect(server.store.state.leases.find((l) => l.id === made.lease.id)!.state).toBe('active');
    expect(existsSync(diskPath)).toBe(true);
    await server.stop();
    const stateNow = readFileSync(join(dataA, 'state.json'), 'utf8'); // stopped: the whole state, its journal folded in
    expect(readFileSync(join(dataA, 'state.json.journal'), 'utf8')).toBe('');

    // 3. The operator restores yesterday's state: the disk made since is quarantined, not destroyed.
    copyFileSync(join(work, 'state-before.json'), join(dataA, 'state.json'));
    copyFileSync(join(work, 'state-before.json.journal'), join(dataA, 'state.json.journal'));
    server = await startServer(serverConfig(dataA));
    expect(existsSync(diskPath)).toBe(false);
    const q = await api('GET', '/storage/quarantine');
    expect(q.status).toBe(200);
    expect(q.body).toEqual([expect.objectContaining({ diskId: made.lease.id, image: 'test', name: expect.stringMatching(new RegExp(`^${made.lease.id}@`)) })]);
    // tenants may not see or touch it
    const t2 = (await api('POST', '/tenants', { id: 'fred', name: 'Fred' })).body.token;
    expect((await api('GET', '/storage/quarantine', undefined, t2)).status).toBe(403);
    await server.stop();

    // 4. Back to today's state, but the disk is still aside: the lease says so instead of reading active.
    writeFileSync(join(dataA, 'state.json'), stateNow);
    writeFileSync(join(dataA, 'state.json.journal'), ''); // the quarantine run's journal goes with its state
    server = await startServer(serverConfig(dataA));
    const shown = (await api('GET', `/leases/${made.lease.id}`, undefined, tenant)).body;
    expect(shown.state).toBe('error');
    expect(shown.stateReason).toMatch(/root disk is missing/);

    // 5. Only an explicit admin call removes a quarantined disk.
    const name = q.body[0].name;
    expect((await api('DELETE', `/storage/quarantine/${encodeURIComponent(name)}`)).status).toBe(204);
    expect((await api('GET', '/storage/quarantine')).body).toEqual([]);
    expect((await api('DELETE', `/storage/quarantine/${encodeURIComponent(name)}`)).status).toBe(404);
    expect((await api('DELETE', '/storage/quarantine/..%2F..%2Fetc')).status).toBe(400);

    // 6. Adopting is explicit: a fresh state with storage.adopt takes the directory over (no lab of its
    // own: the running lab's host address still carries the boot IP).
    await server.stop();
    server = await startServer(serverConfig(join(work, 'c'), { lab: { enabled: false }, network: { driver: 'none' }, storage: { ...config.storage, dir: fs.dir, adopt: true, tgt: { controlPort: freeControlPort() } } }));
    expect(server.store.state.controllerId).toBe(controllerId);
  }, 600_000);
});

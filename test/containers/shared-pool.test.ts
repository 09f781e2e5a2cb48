/**
 * The shared pool with two "remote" boards: real Docker engines, each in its own network namespace,
 * reached over TCP + TLS on 2376 through a veth pair (test/containers/dockerd.sh). Board 1 keeps its
 * data on btrfs, so disk quotas are enforced there; board 2 on ext4 (overlay2: none). Covers placement, outbound policy, an engine
 * stopped mid-lease, reconcile and failover.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ContainerLeaseDriver } from '../../src/containers/driver.js';
import { failoverLeases, watchFailover, type FailoverResult } from '../../src/containers/failover.js';
import { ContainerHost } from '../../src/containers/host.js';
import type { ContainerImageSource } from '../../src/containers/images.js';
import { ContainerPool } from '../../src/containers/pool.js';
import type { ContainerLease, ContainerLeaseSpec, RecordedContainerLease } from '../../src/containers/types.js';
import {
  armhfImage,
  destroyEngine,
  remoteHostConfig,
  requireContainerTools,
  ssh,
  sshKeyPair,
  startRemoteEngine,
  stopEngine,
  uniq,
  waitForSsh,
  type KeyPair,
  type RemoteEngine,
} from './engines.js';

// Fixed names: a crashed earlier run is cleaned up by destroy() before we start.
const B1 = 'dzt-sp1';
const B2 = 'dzt-sp2';
const run = uniq();
let e1: RemoteEngine;
let e2: RemoteEngine;
let image: ContainerImageSource;
let key: KeyPair;

function spec(n: string, extra: Partial<ContainerLeaseSpec> = {}): ContainerLeaseSpec {
  return {
    leaseId: `s-${run}-${n}`,
    tenantId: `t-${run}`,
    image: image.ref,
    memoryMb: 64,
    cpus: 0.25,
    sshKeys: [key.publicKey],
    hostname: `s-${n}`,
    ...extra,
  };
}

/**
 * Placement, outbound, failover and recovery are not about disks: these drivers may place a lease on
 * board 2 (ext4, no quota). The quota test below runs with the default policy, `require`.
 */
const ANY_DISK = { diskQuota: 'best-effort' } as const;

/** A pool of the two boards; capacities are fixed so that placement is predictable. */
function makePool(mem1 = 1024, mem2 = 768): ContainerPool {
  return new ContainerPool(
    [
      new ContainerHost(remoteHostConfig(e1, { memoryMb: mem1, reserveMb: 0 })),
      new ContainerHost(remoteHostConfig(e2, { memoryMb: mem2, reserveMb: 0 })),
    ],
    { failThreshold: 2, pingTimeoutMs: 2_000 },
  );
}

const record = (l: ContainerLease): RecordedContainerLease => ({ leaseId: l.leaseId, hostId: l.hostId, containerId: l.containerId, spec: l.spec });

/** Removes every container and network of ours from both engines (records: none). */
async function clean(driver: ContainerLeaseDriver): Promise<void> {
  await driver.pool.check();
  const r = await driver.reconcile([]);
  expect(r.unreachable).toEqual([]);
}

beforeAll(() => {
  requireContainerTools();
  image = armhfImage();
  key = sshKeyPair('shared-pool');
  for (const n of [B1, B2]) destroyEngine(n);
  e1 = startRemoteEngine(B1, { btrfs: true });
  // overlay2 on its own ext4, whatever the host's /var/lib is; a user namespace for every container.
  e2 = startRemoteEngine(B2, { ext4: true, userns: true });
}, 600_000);

afterAll(() => {
  for (const n of [B1, B2]) {
    try {
      destroyEngine(n);
    } catch (err) {
      console.error((err as Error).message);
    }
  }
}, 120_000);

describe('shared pool of remote boards (TCP + TLS engines)', () => {
  it('reads each board over TLS: capacity, platform, storage driver and quota support', async () => {
    const pool = makePool();
    const [h1, h2] = pool.hosts();
    expect((await pool.check()).map((s) => s.health)).toEqual(['up', 'up']);
    const f1 = await h1!.facts();
    expect(f1).toMatchObject({ memoryMb: 1024, platforms: ['linux/arm/v7'], storageDriver: 'btrfs', quota: { mode: 'yes' }, userns: false });
    expect(f1.cpus).toBeGreaterThan(0);
    expect(await h2!.facts()).toMatchObject({ storageDriver: 'overlay2', backingFs: 'extfs', quota: { mode: 'no' }, userns: true }); // its own ext4
    // Without a client certificate the engine refuses us: no plain or anonymous access to a board.
    const anon = new ContainerHost({ ...remoteHostConfig(e1), cert: e1.ca, key: e1.key, id: 'anon' });
    await expect(anon.ping(2_000)).rejects.toMatchObject({ status: 503, message: /anon .*unreachable/ });
  });

  it('where the engine has a user namespace, a container\'s root is an unprivileged uid on the board', async () => {
    const pool = makePool(256, 768);
    const driver = new ContainerLeaseDriver({ pool, images: [image], ...ANY_DISK });
    try {
      const a = await driver.create(spec('u1', { memoryMb: 128 })); // 256 vs 768 → board 2
      driver.pool.markDown(B2);
      const b = await driver.create(spec('u2', { memoryMb: 128 })); // board 1 (no user namespace)
      driver.pool.markUp(B2);
      expect([a.hostId, b.hostId]).toEqual([B2, B1]);
      expect([(await driver.inspect(a.leaseId)).userns, (await driver.inspect(b.leaseId)).userns]).toEqual([true, false]);
      // Root inside both; on the board (the engines share this host's pid namespace) only board 1's is uid 0.
      for (const l of [a, b]) expect((await driver.exec(l.leaseId, ['id', '-u'])).stdout.trim()).toBe('0');
      const hostUid = async (l: ContainerLease) => {
        const pid = (await pool.get(l.hostId).docker.getContainer(l.containerId).inspect()).State.Pid;
        return Number(/^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);
      };
      expect(await hostUid(a)).toBeGreaterThanOrEqual(100_000);
      expect(await hostUid(b)).toBe(0);
    } finally {
      driver.pool.markUp(B2);
      await clean(driver);
    }
  });

  it('places each lease on the board with the most free memory; when none fits: 409 with the reason', async () => {
    const driver = new ContainerLeaseDriver({ pool: makePool(1024, 768), images: [image], ...ANY_DISK });
    await clean(driver);
    try {
      const placed: string[] = [];
      for (const n of ['p1', 'p2', 'p3']) placed.push((await driver.create(spec(n, { memoryMb: 256 }))).hostId);
      // 1024 vs 768 → B1 (768 left); 768 vs 768 → B1 (lower id; 512 left); 512 vs 768 → B2.
      expect(placed).toEqual([B1, B1, B2]);
      expect(await driver.pool.get(B1).freeMemoryMb()).toBe(512);
      expect(await driver.pool.get(B2).freeMemoryMb()).toBe(512);
      await expect(driver.create(spec('p4', { memoryMb: 600 }))).rejects.toMatchObject({
        status: 409,
        message: `no shared board has 600 MiB free: ${B1} has 512 MiB, ${B2} has 512 MiB`,
      });
      driver.pool.markDown(B2, 'maintenance');
      await expect(driver.create(spec('p4', { memoryMb: 600 }))).rejects.toMatchObject({
        status: 409,
        message: `no shared board has 600 MiB free: ${B1} has 512 MiB, ${B2} is down (marked by operator: maintenance)`,
      });
      // A board marked down takes nothing, even when it has the most room.
      expect((await driver.create(spec('p5', { memoryMb: 128 }))).hostId).toBe(B1);
    } finally {
      driver.pool.markUp(B2);
      await clean(driver);
    }
  });

  it('enforces the disk quota on the btrfs board, and says where it cannot', async () => {
    const driver = new ContainerLeaseDriver({ pool: makePool(1024, 768), images: [image] });
    try {
      // 128 MiB: the page cache of the 64 MiB written below is charged to the container too.
      const lease = await driver.create(spec('q1', { diskMb: 64, memoryMb: 128 }));
      expect(lease.hostId).toBe(B1);
      const st = await driver.inspect(lease.leaseId);
      expect(st.disk).toMatchObject({ quotaMb: 64, enforced: true });
      expect(st.disk.detail).toMatch(/btrfs/);
      // Ready first, as a tenant would wait: filling the disk while the image's first start still
      // writes its SSH host key would test that race, not the quota.
      expect(await driver.waitReady(lease.leaseId, { timeoutMs: 60_000 })).toMatch(/^SSH-2\.0-dropbear/);
      const r = await driver.exec(lease.leaseId, ['sh', '-c', 'dd if=/dev/zero of=/fill bs=1M count=100 2>&1; echo rc=$?; rm -f /fill; sync']);
      expect(r.stdout).toMatch(/Disk quota exceeded|No space left/);
      expect(r.stdout).toMatch(/rc=1/);
      // Over SSH through the board's address, with the tenant's key; a failure says what the container went through.
      const login = await waitForSsh(key.privateKey, lease.sshHost, lease.sshPort!, 'uname -m', 60_000).catch(async (err: Error) => {
        const { state, oomKilled, oomEvents, restartCount, exitCode } = await driver.inspect(lease.leaseId);
        throw new Error(`${err.message}; container: ${JSON.stringify({ state, oomKilled, oomEvents, restartCount, exitCode })}`);
      });
      expect(login.stdout.trim()).toBe('armv7l');
      // A disk full when the lease starts (a tenant filling it during the first start, before the init
      // made its fifo) does not keep the lease down: the init's state lives in /run, in memory. Emptying
      // /run recreates the first start; on disk, mkfifo failed there, the init exited and the engine
      // restarted it forever.
      const filled = await driver.exec(lease.leaseId, ['sh', '-c', 'rm -rf /run/*; dd if=/dev/zero of=/fill bs=1M count=100 >/dev/null 2>&1; sync; test -s /fill && echo full']);
      expect(filled.stdout.trim()).toBe('full');
      await driver.power(lease.leaseId, 'off');
      await driver.power(lease.leaseId, 'on');
      expect(await driver.waitReady(lease.leaseId, { timeoutMs: 30_000 })).toMatch(/^SSH-2\.0-dropbear/);
      expect((await driver.exec(lease.leaseId, ['sh', '-c', 'test -s /fill && rm /fill && echo freed'])).stdout.trim()).toBe('freed');
      expect((await driver.inspect(lease.leaseId)).restartCount).toBe(0);

      // With board 1 down, only board 2 (ext4) is left: the lease is refused rather than run without its quota …
      driver.pool.markDown(B1);
      await expect(driver.create(spec('q2', { diskMb: 64 }))).rejects.toMatchObject({
        status: 409,
        message: expect.stringMatching(new RegExp(`^no shared board has 64 MiB free and enforces a disk quota: ${B1} is down .*, ${B2} cannot enforce a disk quota \\(overlay2 on extfs`)),
      });
      // … unless the operator chose best-effort: then it runs, and says it has none.
      const lax = new ContainerLeaseDriver({ pool: driver.pool, images: [image], ...ANY_DISK });
      const other = await lax.create(spec('q2', { diskMb: 64 }));
      expect(other.hostId).toBe(B2);
      expect((await lax.inspect(other.leaseId)).disk).toMatchObject({ quotaMb: 64, enforced: false, detail: expect.stringMatching(/overlay2 on extfs/) });
    } finally {
      driver.pool.markUp(B1);
      await clean(driver);
    }
  }, 240_000);

  it('outbound allow reaches past the board; deny (internal network) does not, and publishes no SSH port', async () => {
    // "Outside" = the host end of the board's veth, where the test listens.
    const outside = e2.host.replace(/\.2$/, '.1');
    const server: Server = createServer((s) => s.end('outside-ok\n'));
    await new Promise<void>((r) => server.listen(0, outside, r));
    const port = (server.address() as { port: number }).port;
    const pool = makePool(256, 768); // both leases land on B2
    const allow = new ContainerLeaseDriver({ pool, images: [image], ...ANY_DISK, outbound: 'allow' });
    const deny = new ContainerLeaseDriver({ pool, images: [image], ...ANY_DISK, outbound: 'deny' });
    try {
      const a = await allow.create(spec('o1'));
      const d = await deny.create({ ...spec('o2'), tenantId: `t-${run}-deny` });
      expect([a.hostId, d.hostId]).toEqual([B2, B2]);
      const probe = (drv: ContainerLeaseDriver, id: string) =>
        drv.exec(id, ['sh', '-c', `nc -w 3 ${outside} ${port} </dev/null; echo rc=$?`]);
      expect((await probe(allow, a.leaseId)).stdout).toContain('outside-ok');
      expect((await probe(deny, d.leaseId)).stdout).not.toContain('outside-ok');
      expect(d.sshPort).toBeNull();
      // No published port: readiness comes from the console's marker instead.
      expect(await deny.waitReady(d.leaseId, { timeoutMs: 30_000 })).toBe('console ready');
      expect((await deny.inspect(d.leaseId)).outbound).toBe('deny');
      const net = await pool.get(B2).docker.getNetwork(d.network).inspect();
      expect(net.Internal).toBe(true);
      // The same tenant can't have both policies on one board.
      await expect(deny.create({ ...spec('o3') })).rejects.toMatchObject({ status: 409, message: /outbound allow/ });
    } finally {
      server.close();
      await clean(allow);
    }
  });

  it('a board whose tenant bridges reach the boot network gets no lease until its own firewall fences them', async () => {
    // The "boot network": a listener on the host end of board 1's veth, as the controller's metadata port
    // would be. The same listener answers on board 2's host end too: the control, outside the fence.
    const boot = e1.host.replace(/\.2$/, '.1');
    const elsewhere = e2.host.replace(/\.2$/, '.1');
    // The probe closes at once (`nc -e true`): a reset is expected, not an error of this test.
    const server: Server = createServer((s) => s.on('error', () => {}).end('boot-service\n'));
    await new Promise<void>((r) => server.listen(0, '0.0.0.0', r));
    const target = { ip: boot, port: (server.address() as { port: number }).port };
    const pool = makePool(1024, 768);
    const drop = ['DOCKER-USER', '-d', boot, '-j', 'DROP'];
    try {
      // Neither board fences it (board 2's tenants route to it through the host as well): refused, naming both.
      const open = new ContainerLeaseDriver({ pool, images: [image], ...ANY_DISK, fenceTargets: [target] });
      const reached = `a tenant's bridge reaches ${boot}:${target.port}`;
      await expect(open.create(spec('n1'))).rejects.toMatchObject({
        status: 409,
        message: `no shared board has 64 MiB free and is fenced from the boot network: ${B1} is not fenced from the boot network (${reached}), ${B2} is not fenced from the boot network (${reached})`,
      });
      // Board 1's firewall drops what its bridges forward to the boot network: a new probe finds it fenced.
      execFileSync('ip', ['netns', 'exec', B1, 'iptables', '-I', ...drop]);
      const driver = new ContainerLeaseDriver({ pool, images: [image], ...ANY_DISK, fenceTargets: [target] });
      const lease = await driver.create(spec('n2'));
      expect(lease.hostId).toBe(B1);
      // The tenant's container reaches the same listener outside the fence, and not the boot network.
      const reach = async (ip: string) => (await driver.exec(lease.leaseId, ['sh', '-c', `nc -w 2 ${ip} ${target.port} </dev/null; echo rc=$?`])).stdout;
      expect(await reach(elsewhere)).toContain('boot-service');
      expect(await reach(boot)).not.toContain('boot-service');
      await clean(driver);
    } finally {
      try {
        execFileSync('ip', ['netns', 'exec', B1, 'iptables', '-D', ...drop], { stdio: 'ignore' });
      } catch {
        // not inserted: the test failed before that step
      }
      server.close();
    }
  }, 180_000);

  it('engine stopped mid-lease: errors name the board; after it returns, reconcile leaves nothing orphaned', async () => {
    const pool = makePool(1024, 768);
    const driver = new ContainerLeaseDriver({ pool, images: [image], ...ANY_DISK });
    const lease = await driver.create(spec('f1'));
    // A create whose record never landed (the control plane died right after): an orphan to be.
    const ghost = await driver.create({ ...spec('f2'), tenantId: `t-${run}-ghost` });
    expect([lease.hostId, ghost.hostId]).toEqual([B1, B1]);
    try {
      try {
        stopEngine(B1);
        const down = new RegExp(`shared board ${B1} \\(tcp://${e1.host.replace(/\./g, '\\.')}:2376\\): Docker engine unreachable`);
        await expect(driver.inspect(lease.leaseId)).rejects.toMatchObject({ status: 503, message: down });
        await expect(driver.power(lease.leaseId, 'cycle')).rejects.toMatchObject({ status: 503, message: down });
        // Those two failed calls count as failed health checks (failThreshold 2).
        expect(pool.state(B1)).toMatchObject({ health: 'down', reason: expect.stringMatching(/^unreachable: ECONNREFUSED$/) });
        await pool.check();
        expect(pool.state(B1).health).toBe('down');
        // Placement skips it and says why.
        await expect(driver.create(spec('f3', { memoryMb: 1000 }))).rejects.toMatchObject({
          status: 409,
          message: `no shared board has 1000 MiB free: ${B1} is down (unreachable: ECONNREFUSED), ${B2} has 768 MiB`,
        });
        // The error carries what each board had.
        await expect(driver.create(spec('f3', { memoryMb: 1000 }))).rejects.toMatchObject({
          candidates: [
            { id: B1, unavailable: 'is down (unreachable: ECONNREFUSED)' },
            { id: B2, unavailable: null, freeMb: 768 },
          ],
        });
        // Known down now: operations on its leases fail fast, naming it.
        await expect(driver.attach(lease.leaseId)).rejects.toMatchObject({ status: 503, message: new RegExp(`${B1}.* is down`) });
      } finally {
        startRemoteEngine(B1, { btrfs: true });
      }
      await pool.check();
      expect(pool.state(B1).health).toBe('up');
      const r = await driver.reconcile([record(lease)]);
      expect(r.orphansRemoved).toEqual([{ hostId: B1, containerId: ghost.containerId, leaseId: ghost.leaseId }]);
      expect(r.missing).toEqual([]);
      expect(r.unreachable).toEqual([]);
      expect(r.networksRemoved).toEqual([{ hostId: B1, network: `dozen-t-t-${run}-ghost` }]);
      const left = (await pool.get(B1).ours()).map((c) => c.Labels['dozen.lease']);
      expect(left).toEqual([lease.leaseId]);
      // unless-stopped: the lease that was on is on again, and the tenant gets back in.
      expect((await driver.inspect(lease.leaseId)).power).toBe('on');
      expect((await waitForSsh(key.privateKey, lease.sshHost, lease.sshPort!, 'uname -m')).stdout.trim()).toBe('armv7l');
      // A record whose container vanished is reported, not silently dropped.
      const phantom = { ...record(lease), leaseId: `s-${run}-gone`, containerId: 'f'.repeat(64) };
      const r2 = await driver.reconcile([record(lease), phantom]);
      expect(r2.missing).toEqual([phantom]);
      expect(r2.orphansRemoved).toEqual([]);
    } finally {
      await clean(driver);
    }
  });

  it('fails over: a board marked down has its leases recreated on another board', async () => {
    const pool = makePool(1024, 768);
    const off = new ContainerLeaseDriver({ pool, images: [image], ...ANY_DISK });
    const driver = new ContainerLeaseDriver({ pool, images: [image], ...ANY_DISK, failover: true });
    try {
      const l1 = await driver.create(spec('m1'));
      const l2 = await driver.create(spec('m2'));
      expect([l1.hostId, l2.hostId]).toEqual([B1, B1]);
      const records = [record(l1), record(l2)];
      expect((await failoverLeases(off, records, { from: [B1] })).skipped).toMatch(/failover is off/);

      // Each lease's outcome is reported (and recorded) as soon as it has moved.
      const results: FailoverResult[] = [];
      const done = new Promise<void>((resolve) => {
        const stop = watchFailover(driver, {
          records: () => records,
          onResult: (r) => {
            results.push(r);
            if (results.length < records.length) return;
            stop();
            resolve();
          },
        });
      });
      pool.markDown(B1, 'board failing');
      await done;
      expect(results.map((x) => x.moved.length + x.failed.length)).toEqual([1, 1]);
      const r = { moved: results.flatMap((x) => x.moved), failed: results.flatMap((x) => x.failed) };
      expect(r!.failed).toEqual([]);
      expect(r!.moved.map((m) => [m.lease.leaseId, m.from, m.lease.hostId])).toEqual([
        [l1.leaseId, B1, B2],
        [l2.leaseId, B1, B2],
      ]);
      for (const m of r!.moved) {
        expect(m.lease.sshHost).toBe(e2.sshHost);
        expect((await waitForSsh(key.privateKey, m.lease.sshHost, m.lease.sshPort!, 'uname -m')).stdout.trim()).toBe('armv7l');
        expect((await driver.inspect(m.lease.leaseId)).hostId).toBe(B2);
      }
      // B1 still answered, so the old copies are gone from it.
      expect(await pool.get(B1).ours()).toEqual([]);
      // The old port on B1 no longer lets anyone in.
      expect((await ssh(key.privateKey, l1.sshHost, l1.sshPort!, 'true', 5_000)).code).not.toBe(0);
    } finally {
      pool.markUp(B1);
      await clean(driver);
    }
  });

  it('migrates (a drain): the same lease on another board from its committed image, its root-fs changes kept, the old board left clean', async () => {
    const pool = makePool(1024, 768);
    const driver = new ContainerLeaseDriver({ pool, images: [image], ...ANY_DISK });
    try {
      const l = await driver.create(spec('mv1'));
      expect(l.hostId).toBe(B1);
      await waitForSsh(key.privateKey, l.sshHost, l.sshPort!, 'echo moved-with-me > /root/mark && sync');
      const m = await driver.migrate(record(l), { exclude: [B1] });
      expect(m.lease).toMatchObject({ leaseId: l.leaseId, hostId: B2, spec: l.spec });
      expect(m.bytesMoved).toBeGreaterThan(100_000); // the committed image crossed
      expect((await waitForSsh(key.privateKey, m.lease.sshHost, m.lease.sshPort!, 'cat /root/mark')).stdout.trim()).toBe('moved-with-me');
      // The spec keeps the lease's own image (a reimage starts fresh); the container runs the moved one.
      expect((await driver.inspect(l.leaseId)).image).toMatch(/^dozen-moved\//);
      expect(await pool.get(B1).ours()).toEqual([]);
      expect((await pool.get(B1).call('list images', (d) => d.listImages())).flatMap((i) => i.RepoTags ?? []).filter((t) => t.startsWith('dozen-moved/'))).toEqual([]);
      // Nowhere to go: refused, and the lease runs where it was.
      await expect(driver.migrate(record(m.lease), { exclude: [B1, B2] })).rejects.toThrow();
      expect((await waitForSsh(key.privateKey, m.lease.sshHost, m.lease.sshPort!, 'cat /root/mark')).stdout.trim()).toBe('moved-with-me');
    } finally {
      await clean(driver);
    }
  });

  it('a board that comes back loses the old copies of leases recorded elsewhere, and only those', async () => {
    const pool = makePool(1024, 768);
    const driver = new ContainerLeaseDriver({ pool, images: [image], ...ANY_DISK });
    try {
      const kept = await driver.create(spec('bk1'));
      const moved = await driver.create(spec('bk2'));
      const placing = await driver.create(spec('bk3'));
      expect([kept.hostId, moved.hostId, placing.hostId]).toEqual([B1, B1, B1]);
      const lines = await driver.removeMovedCopies(B1, [record(kept), { ...record(moved), hostId: B2, containerId: 'elsewhere' }]);
      expect(lines).toEqual([`removed the old copy of lease ${moved.leaseId} on ${B1} (it runs on ${B2})`]);
      expect((await pool.get(B1).ours()).map((c) => c.Labels['dozen.lease']).sort()).toEqual([kept.leaseId, placing.leaseId].sort());
    } finally {
      await clean(driver);
    }
  });
});

/**
 * Container leases on a real Docker engine (test/containers/dockerd.sh, host network namespace) running
 * the armhf base image through qemu-user binfmt: limits enforced by the kernel, tenant isolation by
 * Docker's bridge rules, console over the container's TTY, SSH with the tenant's key.
 */
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ContainerLeaseDriver } from '../../src/containers/driver.js';
import { ContainerHost } from '../../src/containers/host.js';
import type { ContainerImageSource } from '../../src/containers/images.js';
import { ContainerPool } from '../../src/containers/pool.js';
import type { ContainerLease, ContainerLeaseSpec } from '../../src/containers/types.js';
import { OutputWatcher } from '../../src/util/wait-for.js';
import {
  armhfImage,
  kernelLimits,
  oomKills,
  pidsState,
  processCgroups,
  requireContainerTools,
  ssh,
  sshKeyPair,
  startSharedEngine,
  uniq,
  waitForSsh,
  type KeyPair,
  type ProcessCgroups,
} from './engines.js';

const run = uniq();
let image: ContainerImageSource;
let pool: ContainerPool;
let driver: ContainerLeaseDriver;
let host: ContainerHost;
let keyA: KeyPair;
let keyB: KeyPair;
const created: string[] = [];

function spec(n: string, tenant: 'a' | 'b', extra: Partial<ContainerLeaseSpec> = {}): ContainerLeaseSpec {
  return {
    leaseId: `l-${run}-${n}`,
    tenantId: `t-${run}-${tenant}`,
    image: image.ref,
    memoryMb: 64,
    cpus: 0.5,
    sshKeys: [tenant === 'a' ? keyA.publicKey : keyB.publicKey],
    hostname: `c-${n}`,
    ...extra,
  };
}

async function create(s: ContainerLeaseSpec, d = driver): Promise<ContainerLease> {
  created.push(s.leaseId);
  return d.create(s);
}

/** The container's cgroups on this (local) engine, v1 or v2, found from its init process. */
async function cgroupsOf(containerId: string, h = host): Promise<ProcessCgroups> {
  const pid = (await h.docker.getContainer(containerId).inspect()).State.Pid;
  expect(pid, `container ${containerId} has a running init`).toBeGreaterThan(0);
  try {
    return processCgroups(pid);
  } catch (err) {
    // Seen once in CI (ENOENT on /proc/<pid>/cgroup): the init was gone by then. Say how it ended.
    const st = (await h.docker.getContainer(containerId).inspect()).State;
    const { Status, Pid, OOMKilled, ExitCode, Error: why, StartedAt, FinishedAt } = st;
    throw new Error(`container ${containerId}'s init ${pid} is gone (${(err as Error).message}); now: ${JSON.stringify({ Status, Pid, OOMKilled, ExitCode, Error: why, StartedAt, FinishedAt })}`);
  }
}

const MiB = 1024 * 1024;

beforeAll(async () => {
  requireContainerTools();
  const socketPath = startSharedEngine();
  image = armhfImage();
  keyA = sshKeyPair('tenant-a');
  keyB = sshKeyPair('tenant-b');
  host = new ContainerHost({
    id: 'shared-local',
    socketPath,
    sshHost: '127.0.0.1',
    publishIp: '127.0.0.1',
    // This x86 engine runs armv7 userlands through qemu-user binfmt.
    platforms: ['linux/arm/v7'],
    sshPortRange: [23000, 23199],
  });
  pool = new ContainerPool([host]);
  // This engine keeps its data on the host's own file system, which may have no per-container quota:
  // best-effort, so the limits below are tested wherever this runs (the quota: shared-pool.test.ts).
  driver = new ContainerLeaseDriver({ pool, images: [image], diskQuota: 'best-effort' });
}, 600_000);

afterAll(async () => {
  for (const id of created) await driver?.release(id).catch(() => {});
});

describe('a container lease on a shared board', () => {
  it('runs an armv7 userland with memory, swap, CPU and pids limits the kernel enforces; a disk quota as far as the engine’s storage allows', async () => {
    const lease = await create(spec('1', 'a'));
    expect(lease).toMatchObject({ hostId: 'shared-local', sshHost: '127.0.0.1', network: `dozen-t-t-${run}-a` });
    expect(lease.sshPort).toBeGreaterThanOrEqual(23000);
    expect(await driver.waitReady(lease.leaseId, { timeoutMs: 30_000 })).toMatch(/^SSH-2\.0-dropbear/);
    const r = await driver.exec(lease.leaseId, ['uname', '-m']);
    expect(r.stdout.trim()).toBe('armv7l');
    const st = await driver.inspect(lease.leaseId);
    expect(st).toMatchObject({
      state: 'running',
      power: 'on',
      oomKilled: false,
      platform: 'linux/arm/v7',
      limits: { memoryMb: 64, memorySwapMb: 64, cpus: 0.5, pidsLimit: 256 },
    });
    expect(st.ip).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
    // What Docker was asked for (its HostConfig) …
    const hc = (await host.docker.getContainer(st.containerId).inspect()).HostConfig;
    expect({ Memory: hc.Memory, MemorySwap: hc.MemorySwap, NanoCpus: hc.NanoCpus, PidsLimit: hc.PidsLimit }).toEqual({ Memory: 64 * MiB, MemorySwap: 64 * MiB, NanoCpus: 0.5e9, PidsLimit: 256 });
    // … is what the kernel enforces (the container's cgroups, v1 or v2, as the host sees them) …
    expect(kernelLimits(await cgroupsOf(st.containerId))).toEqual({ memoryBytes: 64 * MiB, cpus: 0.5, pidsMax: 256 });
    // … and what the tenant's processes see inside (cgroup v2: memory.max; v1: memory.limit_in_bytes).
    const inside = await driver.exec(lease.leaseId, ['sh', '-c', 'cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes']);
    expect(inside.stdout.trim()).toBe(String(64 * MiB));
    // Disk: whether a quota is enforced follows from the engine's storage driver and the file system
    // under its data root (this host's, whatever it is); shared-pool.test.ts enforces one on btrfs.
    const facts = await host.facts();
    const root = String((await host.docker.info()).DockerRootDir);
    const fsType = execFileSync('stat', ['-f', '-c', '%T', root], { encoding: 'utf8' }).trim(); // e.g. ext2/ext3, xfs, btrfs
    if (facts.backingFs) expect(facts.backingFs).toBe(({ 'ext2/ext3': 'extfs' } as Record<string, string>)[fsType] ?? fsType);
    if (facts.quota.mode === 'no') {
      expect(st.disk).toEqual({ quotaMb: 2048, enforced: false, detail: facts.quota.detail });
      // With the default policy the same lease is refused here, saying why.
      const strict = new ContainerLeaseDriver({ pool, images: [image] });
      await expect(strict.create(spec('1s', 'a'))).rejects.toMatchObject({ status: 409, message: `no shared board has 64 MiB free and enforces a disk quota: shared-local cannot enforce a disk quota (${facts.quota.detail})` });
    } else expect(st.disk).toMatchObject({ quotaMb: 2048, enforced: true });
  });

  it('enforces the memory limit: allocating past it gets the process OOM-killed', async () => {
    const id = `l-${run}-1`;
    // dd's buffer is 100 MiB, written in full from /dev/zero: past the 64 MiB limit (swap = 0).
    const r = await driver.exec(id, ['dd', 'if=/dev/zero', 'of=/dev/null', 'bs=100M', 'count=1']);
    expect(r.exitCode).toBe(137);
    const st = await driver.inspect(id);
    expect(st.oomKilled).toBe(true);
    expect(st.oomEvents).toBeGreaterThanOrEqual(1);
    // The kernel's own count, from the container's memory cgroup on this (local) engine.
    expect(oomKills(await cgroupsOf(st.containerId))).toBeGreaterThanOrEqual(1);
    // Only the hog died: the lease itself still runs.
    expect(st.state).toBe('running');
    expect((await driver.exec(id, ['echo', 'alive'])).stdout.trim()).toBe('alive');
  });

  it('enforces the pids limit: a bounded fork loop hits it and the kernel counts the refusals', async () => {
    const small = new ContainerLeaseDriver({ pool, images: [image], diskQuota: 'best-effort', pidsLimit: 48 });
    // Memory to spare, so that it is the pids limit and not the memory limit that stops the loop.
    const lease = await create(spec('p', 'a', { memoryMb: 384 }), small);
    try {
      // 150 background sleeps (each one a qemu-arm process with 1-3 tasks) against a limit of 48
      // tasks; ash gives up at the first refused fork, and the loop is bounded anyway.
      const r = await small.exec(lease.leaseId, ['sh', '-c', 'i=0; while [ $i -lt 150 ]; do sleep 60 & i=$((i+1)); done; echo done'], { timeoutMs: 60_000 });
      const cg = pidsState(await cgroupsOf(lease.containerId));
      // One object, so that a failure shows the shell's output and the cgroup together.
      expect({ output: r.stdout + r.stderr, ...cg, atMost48: cg.current <= 48, refused: cg.maxEvents > 0 }).toMatchObject({
        output: expect.stringMatching(/can't fork|Resource temporarily unavailable/),
        max: '48',
        atMost48: true,
        refused: true,
      });
      // The tenant's fork loop did not take the container down: PID 1 never forks when pids run out.
      expect(await small.inspect(lease.leaseId)).toMatchObject({ state: 'running', restartCount: 0, limits: { pidsLimit: 48 } });
    } finally {
      await small.release(lease.leaseId);
    }
  });

  it("isolates tenants: the same tenant's containers reach each other, another tenant's cannot", async () => {
    const a2 = await create(spec('2', 'a'));
    const b1 = await create(spec('3', 'b'));
    const a1 = `l-${run}-1`;
    const ipA1 = (await driver.inspect(a1)).ip!;
    const ipB1 = (await driver.inspect(b1.leaseId)).ip!;
    expect(a2.network).not.toBe(b1.network);
    // A TCP service in a1 and in b1.
    for (const id of [a1, b1.leaseId]) {
      await driver.exec(id, ['sh', '-c', 'nc -ll -p 7777 -e /bin/echo pong </dev/null >/dev/null 2>&1 &']);
    }
    const probe = (from: string, ip: string) => driver.exec(from, ['sh', '-c', `echo x | nc -w 3 ${ip} 7777; echo "rc=$?"`]);
    // The address itself, without ICMP (NET_RAW is dropped: no ping): a closed port that answers "refused"
    // is reachable; one that is dropped times out.
    const knock = async (from: string, ip: string) => {
      const r = await driver.exec(from, ['sh', '-c', `nc -w 3 ${ip} 7778 </dev/null 2>&1; echo rc=$?`]);
      return r.stdout + r.stderr;
    };
    await expect.poll(async () => (await probe(a2.leaseId, ipA1)).stdout, { timeout: 10_000 }).toContain('pong');
    expect(await knock(a2.leaseId, ipA1)).toMatch(/refused/i);
    // Tenant b can reach its own service but neither tenant a's service nor a's address.
    expect((await probe(b1.leaseId, ipB1)).stdout).toContain('pong');
    const cross = await probe(b1.leaseId, ipA1);
    expect(cross.stdout).not.toContain('pong');
    expect(await knock(b1.leaseId, ipA1)).not.toMatch(/refused/i);
    expect((await probe(a2.leaseId, ipB1)).stdout).not.toContain('pong');
    // The bridges are what the design says: ICC on inside, one per tenant, labeled.
    const net = await host.docker.getNetwork(a2.network).inspect();
    expect(net.Options?.['com.docker.network.bridge.enable_icc']).toBe('true');
    expect(net.Internal).toBe(false);
    expect(net.Labels?.['dozen.tenant']).toBe(`t-${run}-a`);
  });

  it('gives a console on the TTY: echo hi prints hi, Ctrl-C interrupts, resize reaches the shell', async () => {
    const con = await driver.attach(`l-${run}-1`);
    const out = new OutputWatcher(con);
    try {
      con.write('echo hi\n');
      await out.waitFor(/\r?\nhi\r?\n/, 10_000, 'console of lease 1');
      // The marker is printed by the very process that then becomes `sleep` (exec): once it shows, Ctrl-C
      // hits the sleep, not a shell still reading the line.
      con.write(`sh -c 'echo SLEEPING-$((40+2)); exec sleep 100'\n`);
      await out.waitFor('SLEEPING-42', 10_000, 'console: sleep started');
      con.write('\x03');
      con.write('echo after-$?\n');
      await out.waitFor('after-130', 10_000, 'console after Ctrl-C (exit status 130: sleep killed by SIGINT)');
      await con.resize(100, 40);
      con.write('stty size\n');
      await out.waitFor(/40 100/, 10_000, 'console size');
    } finally {
      con.end();
    }
  });

  it('drops every capability but what sshd needs, and forbids gaining privileges (no NET_RAW, no setuid escalation)', async () => {
    const id = `l-${run}-1`;
    const status = (await driver.exec(id, ['cat', '/proc/self/status'])).stdout;
    const eff = BigInt(`0x${/^CapEff:\s*([0-9a-f]+)$/m.exec(status)![1]}`);
    const bit = (n: number) => (eff >> BigInt(n)) & 1n;
    // capability numbers from linux/capability.h
    expect({ NET_RAW: bit(13), MKNOD: bit(27), SYS_ADMIN: bit(21), SETFCAP: bit(31), SETPCAP: bit(8), NET_ADMIN: bit(12) }).toEqual({ NET_RAW: 0n, MKNOD: 0n, SYS_ADMIN: 0n, SETFCAP: 0n, SETPCAP: 0n, NET_ADMIN: 0n });
    expect({ SETUID: bit(7), SETGID: bit(6), CHOWN: bit(0), SYS_CHROOT: bit(18) }).toEqual({ SETUID: 1n, SETGID: 1n, CHOWN: 1n, SYS_CHROOT: 1n });
    expect(status).toMatch(/^NoNewPrivs:\s*1$/m);
    const hc = (await host.docker.getContainer((await driver.inspect(id)).containerId).inspect()).HostConfig;
    expect([hc.CapDrop, hc.SecurityOpt]).toEqual([['ALL'], ['no-new-privileges:true']]);
  });

  it("lets the tenant in over SSH with its key (and nobody else's)", async () => {
    const lease = (await driver.known()).find((l) => l.leaseId === `l-${run}-1`)!;
    const ok = await waitForSsh(keyA.privateKey, lease.sshHost, lease.sshPort!, 'uname -m');
    expect(ok.stdout.trim()).toBe('armv7l');
    const denied = await ssh(keyB.privateKey, lease.sshHost, lease.sshPort!, 'uname -m');
    expect(denied.code).not.toBe(0);
    expect(denied.stderr).toMatch(/Permission denied/);
  });

  it('powers off and on keeping the disk and the SSH port; reimage gives a fresh container on the same port', async () => {
    const id = `l-${run}-2`;
    const before = driver.known().find((l) => l.leaseId === id)!;
    await driver.exec(id, ['touch', '/root/tenant-was-here']);
    await driver.power(id, 'off');
    expect((await driver.inspect(id)).power).toBe('off');
    await driver.power(id, 'off'); // already off: fine
    await driver.power(id, 'on');
    expect((await driver.exec(id, ['ls', '/root/tenant-was-here'])).exitCode).toBe(0);
    await driver.power(id, 'cycle');
    expect((await driver.inspect(id)).power).toBe('on');
    expect((await waitForSsh(keyA.privateKey, '127.0.0.1', before.sshPort!, 'ls /root/tenant-was-here')).code).toBe(0);

    const after = await driver.reimage(id);
    expect(after.containerId).not.toBe(before.containerId);
    expect(after.sshPort).toBe(before.sshPort);
    expect((await driver.exec(id, ['ls', '/root/tenant-was-here'])).exitCode).not.toBe(0);
    expect((await waitForSsh(keyA.privateKey, '127.0.0.1', after.sshPort!, 'uname -m')).stdout.trim()).toBe('armv7l');
  });

  it('refuses bad specs (400) and a second lease with the same id (409)', async () => {
    await expect(driver.create({ ...spec('x', 'a'), memoryMb: 1 })).rejects.toMatchObject({ status: 400, message: /memoryMb/ });
    await expect(driver.create({ ...spec('x', 'a'), sshKeys: ['not a key'] })).rejects.toMatchObject({ status: 400 });
    await expect(driver.create(spec('1', 'a'))).rejects.toMatchObject({ status: 409, message: /already exists on shared-local/ });
    await expect(driver.inspect('no-such-lease')).rejects.toMatchObject({ status: 404 });
  });

  it("release removes the container, and the tenant's network with its last container", async () => {
    const netA = `dozen-t-t-${run}-a`;
    const netB = `dozen-t-t-${run}-b`;
    const names = async () => (await host.docker.listNetworks()).map((n) => n.Name);
    await driver.release(`l-${run}-3`);
    expect(await names()).not.toContain(netB);
    await driver.release(`l-${run}-1`);
    expect(await names()).toContain(netA); // l-2 still uses it
    await driver.release(`l-${run}-2`);
    expect(await names()).not.toContain(netA);
    await driver.release(`l-${run}-2`); // idempotent
    const left = (await host.ours()).filter((c) => c.Labels['dozen.lease']?.startsWith(`l-${run}-`));
    expect(left).toEqual([]);
  });
});

/**
 * Container leases on a real Docker engine (the tests' shared local engine, armhf userland through
 * qemu-user binfmt):
 *  1. lease → ready: driver.create() until the tenant's `ssh … true` succeeds, median of RUNS; the
 *     reference is the same image started by the two API calls `docker run` makes (create + start,
 *     the key copied in between, a published port), timed to the same ssh answer, in the same run;
 *  2. density: how many SIZE MiB leases placement puts on one board of BOARD_MB (reserve 128 MiB),
 *     bounded by capacity or 50; then every one is checked running with no OOM event, and the real
 *     memory use is read from Docker's stats.
 * Env: BENCH_RUNS (5), BENCH_SIZE_MB (64), BENCH_MAX (50),
 *      BENCH_BOARD_MB (1024: a Banana Pi's RAM; `engine`: what docker info reports).
 */
import { randomBytes } from 'node:crypto';
import { ContainerLeaseDriver } from '../src/containers/driver.js';
import { ContainerHost } from '../src/containers/host.js';
import { ContainerPool } from '../src/containers/pool.js';
import { tar } from '../src/containers/tar.js';
import type { ContainerLeaseSpec } from '../src/containers/types.js';
import { armhfImage, requireContainerTools, sshKeyPair, startSharedEngine, waitForSsh } from '../test/containers/engines.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const SIZE_MB = Number(process.env.BENCH_SIZE_MB ?? 64);
// 'engine': the engine's own memory (docker info) instead of a board-sized capacity.
const BOARD_MB = process.env.BENCH_BOARD_MB === 'engine' ? undefined : Number(process.env.BENCH_BOARD_MB ?? 1024);
const MAX = Math.min(Number(process.env.BENCH_MAX ?? 50), 50);

export async function run() {
  requireContainerTools();
  const socketPath = startSharedEngine();
  const image = armhfImage();
  const key = sshKeyPair('bench');
  const tag = randomBytes(3).toString('hex');
  const host = new ContainerHost({
    id: 'bench-board',
    socketPath,
    sshHost: '127.0.0.1',
    publishIp: '127.0.0.1',
    platforms: ['linux/arm/v7'],
    memoryMb: BOARD_MB,
    reserveMb: 128,
    sshPortRange: [24000, 24199],
  });
  const pool = new ContainerPool([host]);
  const driver = new ContainerLeaseDriver({ pool, images: [image], diskQuota: 'best-effort' });
  const spec = (n: string): ContainerLeaseSpec => ({
    leaseId: `b-${tag}-${n}`,
    tenantId: `bench-${tag}`,
    image: image.ref,
    memoryMb: SIZE_MB,
    cpus: 0.5,
    sshKeys: [key.publicKey],
    hostname: `b-${n}`,
  });
  const made: string[] = [];
  const refs: string[] = [];
  const nets: string[] = [];
  try {
    // Warm-up: imports the image into the engine (once per image) and starts qemu's page cache.
    made.push(spec('warm').leaseId);
    await driver.create(spec('warm'));
    await driver.release(spec('warm').leaseId);

    // --- 1. ready time ---------------------------------------------------------------------
    // The engine runs with --bridge=none (no default network): the reference gets a plain bridge.
    const refNet = `bench-ref-${tag}`;
    await host.docker.createNetwork({ Name: refNet, Driver: 'bridge' });
    nets.push(refNet);
    const ours: number[] = [];
    const created: number[] = [];
    const reference: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      let t0 = performance.now();
      const lease = await driver.create(spec(`r${i}`));
      made.push(lease.leaseId);
      created.push(performance.now() - t0);
      await waitForSsh(key.privateKey, lease.sshHost, lease.sshPort!, 'true', 60_000);
      ours.push(performance.now() - t0);
      await driver.release(lease.leaseId);

      const port = 24500 + i;
      t0 = performance.now();
      const c = await host.docker.createContainer({
        name: `bench-ref-${tag}-${i}`,
        Image: image.ref,
        Tty: true,
        OpenStdin: true,
        ExposedPorts: { '22/tcp': {} },
        HostConfig: { NetworkMode: refNet, PortBindings: { '22/tcp': [{ HostIp: '127.0.0.1', HostPort: String(port) }] } },
      });
      refs.push(c.id);
      await c.putArchive(
        tar([
          { path: 'root', mode: 0o700 },
          { path: 'root/.ssh', mode: 0o700 },
          { path: 'root/.ssh/authorized_keys', mode: 0o600, content: key.publicKey + '\n' },
        ]),
        { path: '/' },
      );
      await c.start();
      await waitForSsh(key.privateKey, '127.0.0.1', port, 'true', 60_000);
      reference.push(performance.now() - t0);
      await c.remove({ force: true });
    }

    // --- 2. density ------------------------------------------------------------------------
    let placed = 0;
    let stoppedBy = `the bound of ${MAX}`;
    const tDensity = performance.now();
    for (let i = 0; i < MAX; i++) {
      try {
        const lease = await driver.create(spec(`d${i}`));
        made.push(lease.leaseId);
        placed++;
      } catch (err) {
        if ((err as { status?: number }).status !== 409) throw err;
        stoppedBy = (err as Error).message;
        break;
      }
    }
    const fillS = (performance.now() - tDensity) / 1000;
    await new Promise((r) => setTimeout(r, 3_000)); // let every init settle before measuring
    const leases = driver.known().filter((l) => l.leaseId.startsWith(`b-${tag}-d`));
    const status = await Promise.all(leases.map((l) => driver.inspect(l.leaseId)));
    const running = status.filter((s) => s.state === 'running').length;
    const oom = status.reduce((n, s) => n + s.oomEvents, 0);
    const usage = await Promise.all(
      leases.map(async (l) => {
        const st = (await host.docker.getContainer(l.containerId).stats({ stream: false })) as { memory_stats: { usage?: number; stats?: { cache?: number } } };
        return ((st.memory_stats.usage ?? 0) - (st.memory_stats.stats?.cache ?? 0)) / 1024 / 1024;
      }),
    );
    const sshOk = await waitForSsh(key.privateKey, leases.at(-1)!.sshHost, leases.at(-1)!.sshPort!, 'uname -m').then((r) => r.stdout.trim());

    const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    const r0 = (x: number) => Math.round(x);
    return {
      what: `container leases on one Docker ${(await host.facts()).engineVersion} engine, armhf userland via qemu-user (x86 host), ${SIZE_MB} MiB leases`,
      results: {
        [`lease → ssh ready, ms (median of ${RUNS})`]: {
          ours: r0(med(ours)),
          'plain create+start (ref)': r0(med(reference)),
          ratio: Math.round((med(ours) / med(reference)) * 100) / 100,
        },
        'create() returns, ms (median)': { ours: r0(med(created)) },
        [`leases of ${SIZE_MB} MiB placed on a ${(await host.facts()).memoryMb} MiB board (reserve 128)`]: {
          placed,
          running,
          'oom events': oom,
          'stopped by': stoppedBy,
          'fill time, s': Math.round(fillS * 10) / 10,
        },
        'memory actually used per lease, MiB (median, emulated)': {
          median: Math.round(med(usage) * 10) / 10,
          max: Math.round(Math.max(...usage) * 10) / 10,
          'last lease answers ssh uname -m': sshOk,
        },
      },
      samples: { oursMs: ours.map(r0), referenceMs: reference.map(r0), createdMs: created.map(r0) },
    };
  } finally {
    for (const id of refs) await host.docker.getContainer(id).remove({ force: true }).catch(() => {});
    for (const id of made) await driver.release(id).catch(() => {});
    for (const n of nets) await host.docker.getNetwork(n).remove().catch(() => {});
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  run().then(
    (r) => {
      console.log(r.what);
      console.table(r.results);
      console.log(JSON.stringify(r.samples));
    },
    (err) => {
      console.error(err);
      process.exit(1);
    },
  );
}

/**
 * The container-host contract, run against every kind in CONTAINER_HOSTS (src/containers/hosts.ts) over a
 * real Docker engine: what the board reports (its facts, its name), what it counts (free memory follows our
 * containers' limits), and what a stopped engine does (every call fails as unreachable, naming the board, and
 * the same host answers again once the engine is back).
 *
 * One engine serves both kinds: dockerd.sh's "remote" engine listens on TCP + TLS in its own network
 * namespace and on a unix socket on this machine (/run/<name>.sock), and can be stopped and started again.
 * The shared local engine (startSharedEngine) is left alone: other files use it, and it is never stopped.
 * The engine's data root is its own btrfs, so it reports disk quotas as supported whatever this host runs.
 */
import { totalmem } from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HostUnavailableError } from '../../src/containers/errors.js';
import type { ContainerHost, ContainerHostConfig } from '../../src/containers/host.js';
import { CONTAINER_HOSTS, containerHost, containerHostKind, type ContainerHostKind } from '../../src/containers/hosts.js';
import { ensureImage, type ContainerImageSource } from '../../src/containers/images.js';
import { LABEL } from '../../src/containers/types.js';
import { NotFoundError } from '../../src/util/errors.js';
import { armhfImage, destroyEngine, remoteHostConfig, requireContainerTools, startRemoteEngine, stopEngine, uniq, type RemoteEngine } from './engines.js';

// A fixed name: an engine a crashed earlier run left is destroyed before we start.
const ENGINE = 'dzt-hc';
const ARMHF = 'linux/arm/v7';
const MiB = 1024 * 1024;
const run = uniq();
let engine: RemoteEngine;
let image: ContainerImageSource;

/** How each kind reaches the test engine, and the address its describe() must name (a new kind needs one). */
const FIXTURES: Record<ContainerHostKind, () => { config: ContainerHostConfig; address: string }> = {
  unix: () => ({ config: { id: 'hc-unix', socketPath: engine.socket, platforms: [ARMHF] }, address: `unix://${engine.socket}` }),
  'tcp-tls': () => ({ config: remoteHostConfig(engine, { id: 'hc-tcp-tls', platforms: [ARMHF] }), address: `tcp://${engine.host}:${engine.port}` }),
};

beforeAll(() => {
  requireContainerTools();
  image = armhfImage();
  destroyEngine(ENGINE);
  engine = startRemoteEngine(ENGINE, { btrfs: true });
}, 600_000);

afterAll(() => {
  try {
    destroyEngine(ENGINE);
  } catch (err) {
    console.error((err as Error).message);
  }
}, 120_000);

describe('container host registry', () => {
  it('picks the kind by the config\'s shape; a config of no kind fails naming the known ones', () => {
    expect(Object.keys(CONTAINER_HOSTS)).toEqual(['unix', 'tcp-tls']);
    expect(containerHostKind({ socketPath: '/run/x.sock' })).toBe('unix');
    expect(containerHostKind({ host: '10.0.0.5' })).toBe('tcp-tls');
    const noKind = 'shared board bpi-x: give exactly one of socketPath or host (known container host kinds: unix (socketPath), tcp-tls (host))';
    expect(() => containerHost({ id: 'bpi-x' })).toThrow(noKind);
    expect(() => containerHost({ id: 'bpi-x', socketPath: '/run/x.sock', host: '10.0.0.5' })).toThrow(noKind);
    // The kind's own checks still apply: no TCP engine without TLS.
    expect(() => containerHost({ id: 'bpi-x', host: '10.0.0.5' })).toThrow(/ca, cert and key/);
  });
});

describe.each(Object.keys(CONTAINER_HOSTS) as ContainerHostKind[])('container host contract: %s', (kind) => {
  let host: ContainerHost;
  let address: string;
  const containers: string[] = [];

  beforeAll(() => {
    const f = FIXTURES[kind]();
    host = containerHost(f.config);
    address = f.address;
  });

  afterAll(async () => {
    for (const id of containers) await host.docker.getContainer(id).remove({ force: true }).catch(() => {});
  });

  /** A container made through the host; `ours` carries the lease labels the driver sets, with the limit. */
  async function create(name: string, memoryMb: number, ours = true): Promise<string> {
    const Labels: Record<string, string> = ours ? { [LABEL.lease]: `hc-${run}-${name}`, [LABEL.memoryMb]: String(memoryMb) } : {};
    const c = await host.call(`create container ${name}`, (d) =>
      d.createContainer({ name: `hc-${run}-${kind}-${name}`, Image: image.ref, Labels, HostConfig: { Memory: memoryMb * MiB, MemorySwap: memoryMb * MiB } }),
    );
    containers.push(c.id);
    return c.id;
  }

  const remove = (id: string) => host.call(`remove container ${id}`, (d) => d.getContainer(id).remove({ force: true }));

  it('is the kind its config names; describe() names the board and how it is reached', async () => {
    expect(containerHostKind(host.config)).toBe(kind);
    expect(host.describe()).toBe(`${host.id} (${address})`);
    await expect(host.ping(5_000)).resolves.toBeUndefined();
  });

  it('reports the engine\'s facts: CPUs, memory, the armhf platform, storage and quota support', async () => {
    const f = await host.facts();
    expect(Number.isInteger(f.cpus) && f.cpus > 0, `cpus ${f.cpus}`).toBe(true);
    expect(f.memoryMb).toBe(Math.floor(totalmem() / MiB)); // the engine runs on this machine's kernel
    expect(f.platforms).toContain(ARMHF);
    expect(f.engineVersion).toMatch(/^\d+\.\d+/);
    expect(f).toMatchObject({ storageDriver: 'btrfs', quota: { mode: 'yes' }, userns: false });
  });

  it('free memory goes down by a container\'s limit while it exists, for our containers only', async () => {
    await ensureImage(host, image.ref, [image]); // imported by the first kind, found by the next
    expect(await host.usage()).toEqual({ usedMemoryMb: 0, containers: 0 });
    const free = await host.freeMemoryMb();
    expect(free).toBe((await host.facts()).memoryMb - 128); // the default reserve
    const a = await create('a', 64);
    expect(await host.freeMemoryMb()).toBe(free - 64);
    const b = await create('b', 96);
    expect(await host.freeMemoryMb()).toBe(free - 160);
    // Without our labels a container is not a lease's: the board's own containers are not counted.
    const other = await create('other', 128, false);
    expect(await host.freeMemoryMb()).toBe(free - 160);
    expect(await host.usage()).toEqual({ usedMemoryMb: 160, containers: 2 });
    await remove(a);
    expect(await host.freeMemoryMb()).toBe(free - 96);
    await remove(b);
    expect(await host.freeMemoryMb()).toBe(free);
    await remove(other);
  }, 180_000);

  it('with its engine stopped every call fails as unreachable, naming the board; once the engine is back it answers again', async () => {
    const seen: Array<HostUnavailableError | null> = [];
    host.onReachability = (err) => seen.push(err);
    try {
      // Docker saying no still proves the engine is there.
      await expect(host.call('inspect container', (d) => d.getContainer(`hc-${run}-none`).inspect(), 'container none')).rejects.toBeInstanceOf(NotFoundError);
      expect(seen).toEqual([null]);
      stopEngine(ENGINE);
      try {
        const calls: Array<[string, () => Promise<unknown>]> = [
          ['ping', () => host.ping(2_000)],
          ['list containers', () => host.usage()],
          ['read docker info', () => host.facts(true)],
        ];
        for (const [what, call] of calls) {
          const err = await call().then(() => null, (e: unknown) => e);
          expect(err, what).toBeInstanceOf(HostUnavailableError);
          const reason = (err as HostUnavailableError).reason;
          expect(reason, what).toMatch(/^(ECONNREFUSED|ENOENT)$/);
          expect(err).toMatchObject({ status: 503, hostId: host.id, message: `shared board ${host.describe()}: Docker engine unreachable while trying to ${what} (${reason})` });
          expect(seen.at(-1), `${what} reported to the owner`).toBe(err);
        }
      } finally {
        startRemoteEngine(ENGINE, { btrfs: true });
      }
      // startRemoteEngine returns once the engine answers: the very next call gets through (no stale pooled connection).
      await expect(host.ping(5_000)).resolves.toBeUndefined();
      expect(seen.at(-1)).toBeNull();
      expect((await host.facts(true)).cpus).toBeGreaterThan(0);
      expect(await host.usage()).toEqual({ usedMemoryMb: 0, containers: 0 });
    } finally {
      host.onReachability = undefined;
    }
  }, 180_000);
});

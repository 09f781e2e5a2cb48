/** GET /v1/health/detail's verdict: what an operator checks first when leases fail, named as a problem. */
import { tmpdir } from 'node:os';
import { describe, expect, it } from 'vitest';
import { healthDetailRoutes, type HealthParts } from '../../src/api/health.js';

const detail = (parts: HealthParts) => healthDetailRoutes(parts)[0]!.handler({} as never) as Promise<any>;
const network = () => ({ driver: 'linux-bridge', boardIsolation: 'enforced' as const, problems: [] });

describe('health detail', () => {
  it('is admin only', () => {
    expect(healthDetailRoutes({ network })[0]!.access).toBe('admin');
  });

  it('all well: tgtd running, the storage file system measured, engines up', async () => {
    const d = await detail({ network, storage: { dir: tmpdir(), driver: 'btrfs', tgtdPid: () => 4242 }, docker: () => [{ id: 'pi-1', health: 'up', markedDown: false }], lab: () => ({ netns: 'dozen-lab', boards: 3 }) });
    expect(d.ok).toBe(true);
    expect(d.problems).toEqual([]);
    expect(d.storage.tgtd).toEqual({ running: true, pid: 4242 });
    expect(d.storage.freeBytes).toBeGreaterThan(0);
    expect(d.storage.totalBytes).toBeGreaterThanOrEqual(d.storage.freeBytes);
    expect(d.lab).toEqual({ netns: 'dozen-lab', boards: 3 });
  });

  it('names each problem: tgtd down, a storage directory gone, an engine down or marked down, an unfenced port', async () => {
    const d = await detail({
      network: () => ({ ...network(), problems: ['lab-2: port not fenced'] }),
      storage: { dir: '/nonexistent/dozen-storage', driver: 'btrfs', tgtdPid: () => null },
      docker: () => [{ id: 'pi-1', health: 'down', markedDown: false, reason: 'ping timed out' }, { id: 'pi-2', health: 'up', markedDown: true }],
    });
    expect(d.ok).toBe(false);
    expect(d.problems).toEqual([
      'tgtd is not running',
      expect.stringMatching(/^storage \/nonexistent\/dozen-storage: ENOENT/),
      'Docker engine pi-1: down (ping timed out)',
      'Docker engine pi-2: marked down',
      'network: lab-2: port not fenced',
    ]);
    expect([d.storage.freeBytes, d.docker.length, d.lab]).toEqual([undefined, 2, null]);
  });
});

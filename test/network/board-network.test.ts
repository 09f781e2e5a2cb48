import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Logger } from '../../src/log.js';
import { BoardNetwork } from '../../src/network/board-network.js';
import { networkDriver } from '../../src/network/registry.js';
import { recordingSwitch } from './recording-switch.js';

// The server's side of the network seam over the `command` driver (real /bin/sh, a log for a switch):
// what enrolment, changes and removal of boards, and lease jobs, make the switch do.
const dir = mkdtempSync(join(tmpdir(), 'dzn-boardnet-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function switchLog() {
  const log = join(dir, `switch-${Math.random().toString(16).slice(2)}.log`);
  const driver = networkDriver(recordingSwitch(log, { portOnJoin: false }));
  return { net: new BoardNetwork(driver), lines: () => readFileSync(log, 'utf8').trim().split('\n').filter(Boolean) };
}

const b1 = { id: 'b1', mac: '02:00:00:00:0b:01', ip: '10.77.0.11', port: 'swp1' };
const b2 = { id: 'b2', mac: '02:00:00:00:0b:02', ip: '10.77.0.12', port: 'Gi1/0/2' };

describe('BoardNetwork: the enrolled boards, their leases and the switch', () => {
  it('start attaches every board with a port and rejoins live leases; health names boards left unfenced', async () => {
    const { net, lines } = switchLog();
    const health = await net.start([b1, b2, { id: 'b3', mac: '02:00:00:00:0b:03', ip: '10.77.0.13' }], [{ boardId: 'b1', tenantId: 'alice' }]);
    expect(lines()).toEqual(['attach b1 swp1 02:00:00:00:0b:01 10.77.0.11', 'attach b2 Gi1/0/2 02:00:00:00:0b:02 10.77.0.12', 'join b1 tenant-alice']);
    expect(health).toEqual({ driver: 'command', boardIsolation: 'operator', problems: ['board b3 has no network port: it is not fenced (set its "port")'] });
    expect(net.health()).toBe(health);
  });

  it('sync follows the inventory: a changed port re-attaches, a removed board detaches, an unchanged one is left alone', async () => {
    const { net, lines } = switchLog();
    await net.start([b1, b2], []);
    await net.sync([{ ...b1, port: 'swp9' }]);
    expect(lines().slice(2)).toEqual(['detach b2 Gi1/0/2', 'detach b1 swp1', 'attach b1 swp9 02:00:00:00:0b:01 10.77.0.11']);
    await net.sync([{ ...b1, port: 'swp9', mac: '02:00:00:00:0B:01' }]); // same board, MAC in capitals
    expect(lines()).toHaveLength(5);
    expect((await net.sync([{ ...b1, port: 'swp9' }])).problems).toEqual([]);
    // Two boards swapping ports: each attach is refused while the other holds the port; health says so.
    await net.sync([{ ...b1, port: 'swp9' }, b2]);
    const swapped = await net.sync([{ ...b1, port: 'Gi1/0/2' }, { ...b2, port: 'swp9' }]);
    expect(swapped.problems).toEqual([
      'board b1 is fenced as swp9 02:00:00:00:0b:01 10.77.0.11 but enrolled as Gi1/0/2 02:00:00:00:0b:01 10.77.0.11 (see the log)',
      'board b2 is fenced as Gi1/0/2 02:00:00:00:0b:02 10.77.0.12 but enrolled as swp9 02:00:00:00:0b:02 10.77.0.12 (see the log)',
    ]);
  });

  it('a lease joins its tenant network and leaves it; a board without a fenced port cannot be leased', async () => {
    const { net, lines } = switchLog();
    await net.start([b1, { id: 'b3', mac: '02:00:00:00:0b:03', ip: '10.77.0.13' }], []);
    await net.join('b1', 'bob');
    await net.leave('b1');
    await net.leave('b1'); // in none: fine
    await expect(net.join('b3', 'bob')).rejects.toThrow(/board b3 has no fenced port on the boot network/);
    await net.leave('b3'); // never attached: fine
    expect(lines().slice(1)).toEqual(['join b1 tenant-bob', 'leave b1 tenant-bob']);
  });

  it('under "none" nothing is fenced, health says so, and leases are not refused', async () => {
    const net = new BoardNetwork(networkDriver({ driver: 'none' }));
    const health = await net.start([b1], []);
    expect(health.boardIsolation).toBe('none');
    expect(health.problems).toEqual([expect.stringMatching(/boards are not isolated/)]);
    await net.join('b1', 'bob');
    await net.join('b9', 'bob'); // not even enrolled with a port: nothing to join under none
    // A restart with live leases on boards without a port: nothing to rejoin, and no error per lease.
    const errors: unknown[] = [];
    const quiet = { error: (...a: unknown[]) => errors.push(a), warn: () => {}, info: () => {}, debug: () => {} } as unknown as Logger;
    const again = new BoardNetwork(networkDriver({ driver: 'none' }), quiet);
    await again.start([{ id: 'b3', mac: '02:00:00:00:0b:03', ip: '10.77.0.13' }], [{ boardId: 'b3', tenantId: 'bob' }]);
    expect(errors).toEqual([]);
  });

  it('a restart does not join a live lease whose board is not attached: the log and health say it is unfenced', async () => {
    const { net, lines } = switchLog();
    const errors: Array<Record<string, unknown>> = [];
    const spy = { error: (o: Record<string, unknown>) => errors.push(o), warn: () => {}, info: () => {}, debug: () => {} } as unknown as Logger;
    const restarted = new BoardNetwork(net.driver, spy); // the same switch, a new server
    const health = await restarted.start([b1, { id: 'b3', mac: '02:00:00:00:0b:03', ip: '10.77.0.13' }], [{ boardId: 'b1', tenantId: 'alice' }, { boardId: 'b3', tenantId: 'alice' }]);
    expect(lines()).toEqual(['attach b1 swp1 02:00:00:00:0b:01 10.77.0.11', 'join b1 tenant-alice']);
    expect(errors).toEqual([{ board: 'b3' }]);
    expect(health.problems).toEqual(['board b3 has no network port: it is not fenced (set its "port")']);
  });
});

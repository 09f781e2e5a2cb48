import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { NetworkDriver } from '../../src/network/driver.js';
import { networkDriver } from '../../src/network/registry.js';
import { requireRoot, requireTools } from '../helpers/tools.js';
import { recordingSwitch } from './recording-switch.js';
import { createSegment, type Segment } from './topology.js';

// One contract, run against every network driver: what attach/detach/join/leave do to state(), which
// conflicts are refused, and that repeating a call is harmless.
const dir = mkdtempSync(join(tmpdir(), 'dzn-net-'));
const cleanups: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const c of cleanups) await c().catch(() => {});
  rmSync(dir, { recursive: true, force: true });
});

interface Harness {
  driver: NetworkDriver;
  ports: string[];
  isolation: 'enforced' | 'operator' | 'none';
  /** Driver-specific proof that the datapath follows (e.g. the recorded commands). */
  check?: (step: string) => Promise<void> | void;
}

const MACS = ['02:00:00:00:0a:01', '02:00:00:00:0a:02', '02:00:00:00:0a:03'];

const harnesses: Record<string, () => Promise<Harness>> = {
  async 'linux-bridge'() {
    requireRoot();
    requireTools('nft', 'bridge');
    const seg: Segment = await createSegment(['x', 'y', 'z']);
    cleanups.push(() => seg.cleanup());
    const driver = networkDriver({ driver: 'linux-bridge', bridge: 'br0', netns: seg.brNs, uplink: 'up0', controllerIp: seg.ctl.ip, controllerIface: 'eth0', controllerNetns: seg.ctl.ns });
    cleanups.push(() => driver.stop());
    return {
      driver,
      ports: ['px', 'py', 'pz'],
      isolation: 'enforced',
      // state() compares the kernel's view (nft sets, port flags) with the book: no problem means they agree.
      check: async (step) => expect((await driver.state()).problems, step).toEqual([]),
    };
  },
  async command() {
    // A stand-in managed switch: every command appends what the shell received to a log.
    const log = join(dir, 'switch.log');
    const driver = networkDriver(recordingSwitch(log));
    return {
      driver,
      ports: ['swp1', 'swp2', 'swp3'],
      isolation: 'operator',
      check: (step) => {
        if (step !== 'detach') return;
        expect(readFileSync(log, 'utf8').split('\n').filter(Boolean)).toEqual([
          `attach b1 swp1 ${MACS[0]} 10.250.0.11`,
          `attach b2 swp2 ${MACS[1]} 10.250.0.12`,
          `attach b2 swp2 ${MACS[1]} 10.250.0.12`,
          'join b1 swp1 tenant-1',
          'join b2 swp2 tenant-1',
          'leave b2 swp2 tenant-1',
          'join b2 swp2 tenant-2',
          'leave b2 swp2 tenant-2',
          'leave b1 swp1 tenant-1',
          'detach b1 swp1',
          `attach b1 swp3 ${MACS[2]} 10.250.0.13`,
          'join b1 swp3 tenant-1',
          'leave b1 swp3 tenant-1',
          'detach b1 swp3',
        ]);
      },
    };
  },
  async none() {
    return { driver: networkDriver({ driver: 'none' }), ports: ['tap1', 'tap2', 'tap3'], isolation: 'none' };
  },
};

for (const [name, make] of Object.entries(harnesses)) {
  describe(`network driver contract: ${name}`, () => {
    it('attach, join, leave and detach show in state(); conflicts are refused; repeats are harmless', async () => {
      const { driver, ports, isolation, check } = await make();
      const [p1, p2, p3] = ports as [string, string, string];
      await driver.start();
      await driver.start(); // a restart replaces, it does not stack
      let st = await driver.state();
      expect(st).toMatchObject({ driver: name, boardIsolation: isolation, ports: [], networks: [] });
      expect(st.problems.length > 0).toBe(isolation === 'none'); // "none" says so, every time
      await check?.('start');

      await driver.attach({ boardId: 'b1', port: p1, mac: MACS[0]!.toUpperCase(), ip: '10.250.0.11' });
      await driver.attach({ boardId: 'b2', port: p2, mac: MACS[1]!, ip: '10.250.0.12' });
      await driver.attach({ boardId: 'b2', port: p2, mac: MACS[1]!, ip: '10.250.0.12' }); // same again: no change
      st = await driver.state();
      expect(st.ports).toEqual([
        { boardId: 'b1', port: p1, mac: MACS[0], ip: '10.250.0.11' },
        { boardId: 'b2', port: p2, mac: MACS[1], ip: '10.250.0.12' },
      ]);
      expect(driver.ports()).toEqual(st.ports); // the cheap view agrees
      await check?.('attach');

      // Two boards on one port, MAC or IP would let one speak as the other.
      await expect(driver.attach({ boardId: 'b3', port: p1, mac: MACS[2]!, ip: '10.250.0.13' })).rejects.toThrow(/port .* already attached to board b1/);
      await expect(driver.attach({ boardId: 'b3', port: p3, mac: MACS[0]!, ip: '10.250.0.13' })).rejects.toThrow(/MAC .* already attached to board b1/);
      await expect(driver.attach({ boardId: 'b3', port: p3, mac: MACS[2]!, ip: '10.250.0.12' })).rejects.toThrow(/IP 10.250.0.12 is already attached to board b2/);
      await expect(driver.attach({ boardId: 'b3', port: 'no such port!', mac: MACS[2]!, ip: '10.250.0.13' })).rejects.toThrow(/invalid port name/);
      await expect(driver.attach({ boardId: 'b3', port: p3, mac: 'ff:ff:ff:ff:ff:ff', ip: '10.250.0.13' })).rejects.toThrow(/multicast MAC/);
      await expect(driver.attach({ boardId: 'b3', port: p3, mac: MACS[2]!, ip: '10.250.0.300' })).rejects.toThrow(/invalid IPv4/);
      await expect(driver.join('b9', 'tenant-1')).rejects.toThrow(/board b9 is not attached/);
      await expect(driver.join('b1', 'tenant 1; rm -rf /')).rejects.toThrow(/invalid network id/);

      await driver.join('b1', 'tenant-1');
      await driver.join('b2', 'tenant-1');
      await driver.join('b2', 'tenant-1');
      st = await driver.state();
      expect(st.networks).toEqual([{ id: 'tenant-1', boards: ['b1', 'b2'] }]);
      expect(st.ports.map((p) => p.networkId)).toEqual(['tenant-1', 'tenant-1']);
      expect(driver.ports()).toEqual(st.ports);
      await check?.('join');

      await driver.join('b2', 'tenant-2'); // moves: a board is in one network at most
      expect((await driver.state()).networks).toEqual([
        { id: 'tenant-1', boards: ['b1'] },
        { id: 'tenant-2', boards: ['b2'] },
      ]);
      await driver.leave('b2');
      await driver.leave('b2');
      expect((await driver.state()).networks).toEqual([{ id: 'tenant-1', boards: ['b1'] }]);
      await check?.('leave');

      // Re-attaching a board elsewhere moves it (and keeps its network); detach forgets it, twice is fine.
      await driver.attach({ boardId: 'b1', port: p3, mac: MACS[2]!, ip: '10.250.0.13' });
      st = await driver.state();
      expect(st.ports.find((p) => p.boardId === 'b1')).toEqual({ boardId: 'b1', port: p3, mac: MACS[2], ip: '10.250.0.13', networkId: 'tenant-1' });
      await check?.('move');
      await driver.detach('b1');
      await driver.detach('b1');
      await driver.detach('never-attached');
      st = await driver.state();
      expect(st.ports.map((p) => p.boardId)).toEqual(['b2']);
      expect(driver.ports()).toEqual(st.ports);
      expect(st.networks).toEqual([]);
      await check?.('detach');
      await driver.stop();
    });
  });
}

describe('network driver registry and command templates', () => {
  it('an unknown driver or bad parameters name what is wrong', () => {
    expect(() => networkDriver({ driver: 'ovs' })).toThrow(/unknown network driver "ovs" \(known: linux-bridge, command, none\)/);
    expect(() => networkDriver({ driver: 'constructor' })).toThrow(/unknown network driver "constructor"/);
    expect(() => networkDriver({ driver: 'linux-bridge', bridge: 'br0' })).toThrow(/bad parameters for network driver "linux-bridge"[\s\S]*uplink/);
    expect(() => networkDriver({ driver: 'command', attach: 'true' })).toThrow(/bad parameters for network driver "command"[\s\S]*detach/);
  });

  it('the command driver fills templates with shell-quoted values, in order', async () => {
    const log = join(dir, 'quoted.log');
    const pwned = join(dir, 'pwned');
    const rec = (what: string, ...ph: string[]) => `printf '%s\\n' ${what} ${ph.map((p) => `{${p}}`).join(' ')} >> ${log}`;
    const d = networkDriver({ driver: 'command', attach: rec('attach', 'boardId', 'port', 'mac', 'ip'), detach: rec('detach', 'boardId'), join: rec('join', 'boardId', 'networkId'), leave: rec('leave', 'boardId', 'networkId') });
    process.env.DZN_PWNED = pwned; // the children inherit it: an unquoted expansion would create the file
    const evil = "it's $(touch $DZN_PWNED)`touch $DZN_PWNED`";
    await d.attach({ boardId: evil, port: 'tap1', mac: '02:00:00:00:00:01', ip: '10.250.0.5' });
    await d.join(evil, 'net-1');
    await d.detach(evil);
    expect(existsSync(pwned)).toBe(false);
    expect(readFileSync(log, 'utf8').split('\n').filter(Boolean)).toEqual(['attach', evil, 'tap1', '02:00:00:00:00:01', '10.250.0.5', 'join', evil, 'net-1', 'leave', evil, 'net-1', 'detach', evil]);
  });

  it('a failing command reports its exit status and stderr, and the board is not recorded', async () => {
    const d = networkDriver({ driver: 'command', attach: 'echo switch unreachable >&2; exit 3', detach: 'true', join: 'true', leave: 'true' });
    await expect(d.attach({ boardId: 'b1', port: 'tap1', mac: '02:00:00:00:00:01', ip: '10.250.0.5' })).rejects.toThrow(/network attach command exited with 3: switch unreachable/);
    expect((await d.state()).ports).toEqual([]);
  });
});

/**
 * Config validation refuses at start every boot subnet the DHCP server would refuse when it starts
 * (src/boot/dhcp/server.ts), with the value and, for host bits, the network probably meant.
 */
import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { configSchema, loadConfig, REPO_ROOT } from '../src/config.js';

/** A controller's network choice, which every config without the lab must make (see 'production defaults'). */
const FENCED = { network: { driver: 'linux-bridge' } };

/** The config's error messages, with the path each is at. */
function issues(input: Record<string, unknown>): string[] {
  const r = configSchema.safeParse({ ...FENCED, ...input });
  return r.success ? [] : r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
}

const NET = '192.168.50.0/24';
const BOOT = '192.168.50.1';

describe('production defaults', () => {
  it('start no lab unless asked, and make the operator choose how board ports are fenced', () => {
    expect(configSchema.parse(FENCED).lab.enabled).toBe(false);
    expect(configSchema.safeParse({}).error?.issues.map((i) => `${i.path.join('.')}: ${i.message}`)).toEqual([
      expect.stringMatching(/^network: choose how board ports are fenced/),
    ]);
    // `npm start` (scripts/quickstart.sh) serves config/lab.json: the lab is on there, and fenced by its bridge.
    const lab = loadConfig(join(REPO_ROOT, 'config/lab.json'), {});
    expect([lab.lab.enabled, lab.network]).toEqual([true, undefined]);
    expect(loadConfig(join(REPO_ROOT, 'config/lab.json'), { lab: { enabled: false }, network: { driver: 'none' } }).lab.enabled).toBe(false);
  });
});

describe('boot subnet validation', () => {
  it('accepts the defaults and a served subnet', () => {
    expect(issues({})).toEqual([]);
    expect(configSchema.parse(FENCED).subnet).toBe('10.77.0.0/24');
    expect(issues({ subnet: NET, bootIp: BOOT })).toEqual([]);
    expect(issues({ subnet: '127.0.0.0/8', bootIp: '127.0.0.1' })).toEqual([]);
    expect(issues({ subnet: '192.168.50.4/30', bootIp: '192.168.50.5' })).toEqual([]);
  });

  it('refuses a subnet with host bits set, naming the network probably meant', () => {
    expect(issues({ subnet: '10.0.0.5/24', bootIp: '10.0.0.1' })).toEqual(['subnet: subnet 10.0.0.5/24 has host bits set: did you mean 10.0.0.0/24?']);
    expect(() => loadConfig(undefined, { ...FENCED, subnet: '192.168.50.7/24', bootIp: BOOT })).toThrow(
      'invalid configuration:\n✖ subnet 192.168.50.7/24 has host bits set: did you mean 192.168.50.0/24?\n  → at subnet',
    );
  });

  it('refuses a prefix the DHCP server cannot serve', () => {
    expect(issues({ subnet: '192.168.50.0/31', bootIp: BOOT })).toEqual(['subnet: subnet 192.168.50.0/31: the DHCP server serves prefixes /1 to /30, not /31']);
    expect(issues({ subnet: '192.168.50.1/32', bootIp: BOOT })).toEqual(['subnet: subnet 192.168.50.1/32: the DHCP server serves prefixes /1 to /30, not /32']);
    expect(issues({ subnet: '0.0.0.0/0', bootIp: BOOT })).toEqual(['subnet: subnet 0.0.0.0/0: the DHCP server serves prefixes /1 to /30, not /0']);
  });

  it('refuses what is not a CIDR', () => {
    expect(issues({ subnet: '192.168.50.0', bootIp: BOOT })).toEqual(['subnet: not an IPv4 CIDR: 192.168.50.0']);
    expect(issues({ subnet: '192.168.50.0/33', bootIp: BOOT })).toEqual(['subnet: not an IPv4 CIDR: 192.168.50.0/33']);
  });

  it('reports a bad subnet alongside the other errors', () => {
    expect(issues({ subnet: '192.168.50.7/24', bootIp: BOOT, dhcp: { port: 0 } })).toEqual([
      'subnet: subnet 192.168.50.7/24 has host bits set: did you mean 192.168.50.0/24?',
      'dhcp.port: Too small: expected number to be >=1',
    ]);
  });

  it('refuses a boot IP that is not a host address of the subnet', () => {
    expect(issues({ subnet: NET, bootIp: '192.168.51.1' })).toEqual(['bootIp: 192.168.51.1 is not a host address of 192.168.50.0/24']);
    expect(issues({ subnet: NET, bootIp: '192.168.50.0' })).toEqual(['bootIp: 192.168.50.0 is not a host address of 192.168.50.0/24']);
    expect(issues({ subnet: NET, bootIp: '192.168.50.255' })).toEqual(['bootIp: 192.168.50.255 is not a host address of 192.168.50.0/24']);
    // the default boot IP is outside a subnet given alone
    expect(issues({ subnet: NET })).toEqual(['bootIp: 10.77.0.1 is not a host address of 192.168.50.0/24']);
  });

  it('refuses a discovery pool the DHCP server would refuse', () => {
    const pool = (start: string, end: string) => issues({ subnet: NET, bootIp: BOOT, dhcp: { pool: { start, end } } });
    expect(pool('192.168.50.100', '192.168.50.199')).toEqual([]);
    // the server keeps the network and broadcast addresses out of the pool itself
    expect(pool('192.168.50.0', '192.168.50.255')).toEqual([]);
    expect(pool('192.168.50.9', '192.168.50.2')).toEqual(['dhcp.pool: pool start 192.168.50.9 is after its end 192.168.50.2']);
    expect(pool('192.168.50.200', '192.168.51.2')).toEqual(['dhcp.pool: pool 192.168.50.200-192.168.51.2 is not inside subnet 192.168.50.0/24']);
    expect(pool('10.0.0.1', '10.0.0.9')).toEqual(['dhcp.pool: pool 10.0.0.1-10.0.0.9 is not inside subnet 192.168.50.0/24']);
  });
});

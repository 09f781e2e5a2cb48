import { describe, expect, it } from 'vitest';
import { archOfClient } from '../../src/cli/admin.js';
import { eventLine, newEvents } from '../../src/cli/events.js';
import { Progress, progressText } from '../../src/cli/progress.js';
import { ApiError } from '../../src/cli/context.js';
import { boardIpOf, gatewayFor, parseGateway, sshArgv } from '../../src/cli/ssh.js';
import type { Lease } from '../../src/store/schema.js';
import type { BoardEvent } from '../../src/inventory/events.js';

// The CLI's pure parts: what the end-to-end tests (admin.test.ts) cannot reach, like a terminal.
const ev = (n: number, message = `e${n}`): BoardEvent => ({ time: `2026-01-01T00:00:${String(n).padStart(2, '0')}.000Z`, type: 'dhcp', message });

describe('progress', () => {
  it('draws one bar in place on a terminal, ended by a newline', () => {
    let out = '';
    const p = new Progress({ tty: true, write: (s) => (out += s) });
    p.update({ phase: 'upload', bytesDone: 5e6, bytesTotal: 10e6 });
    p.update({ phase: 'upload', bytesDone: 10e6, bytesTotal: 10e6 });
    p.done();
    expect(out).toBe(`\r  ${progressText({ phase: 'upload', bytesDone: 5e6, bytesTotal: 10e6 })}   \r  upload     [${'#'.repeat(30)}] 100% 10 MB / 10 MB   \n`);
    expect(progressText({ phase: 'expand', bytesDone: 5e6, bytesTotal: 10e6 })).toBe(`expand     [${'#'.repeat(15)}${' '.repeat(15)}]  50% 5.0 MB / 10 MB`);
    expect(progressText({ phase: 'receive', bytesDone: 123e6, bytesTotal: null })).toBe('receive    123 MB');
  });

  it('prints plain lines elsewhere: one per phase, its last state, and at most one per interval', () => {
    let out = '';
    let now = 0;
    const p = new Progress({ tty: false, write: (s) => (out += s), everyMs: 1000, now: () => now });
    for (let i = 1; i <= 10; i++) {
      now += 300;
      p.update({ phase: 'upload', bytesDone: i * 1e6, bytesTotal: 10e6 });
    }
    p.update({ phase: 'install', bytesDone: 0, bytesTotal: null });
    p.done();
    expect(out).not.toContain('\r');
    expect(out.split('\n').filter(Boolean).map((l) => l.trim().split(/\s+/)[0] + ' ' + /[\d.]+ MB/.exec(l)![0])).toEqual([
      'upload 1.0 MB', // the phase starts
      'upload 5.0 MB', // 1.2 s later
      'upload 9.0 MB', // 1.2 s later
      'upload 10 MB', // where it ended
      'install 0.0 MB',
    ]);
  });
});

describe('board events', () => {
  it('finds what is new in a list that grows at its end and loses its oldest', () => {
    const a = [ev(1), ev(2), ev(3)];
    expect(newEvents([], a)).toEqual(a);
    expect(newEvents(a, a)).toEqual([]);
    expect(newEvents(a, [ev(2), ev(3), ev(4)])).toEqual([ev(4)]); // one rotated out, one new
    expect(newEvents(a, [ev(4), ev(5)])).toEqual([ev(4), ev(5)]); // all rotated out
    // the same event twice in a row is two events
    const same = [ev(1), ev(2, 'x'), ev(2, 'x')];
    expect(newEvents(same, [...same, ev(2, 'x')])).toEqual([ev(2, 'x')]);
    expect(eventLine({ ...ev(1), details: { bytes: 3 } })).toBe('2026-01-01T00:00:01.000Z  dhcp      e1  {"bytes":3}');
  });
});

describe('ssh', () => {
  it('parses gateways and builds the argv', () => {
    expect(parseGateway('gw:2200')).toEqual({ host: 'gw', port: 2200 });
    expect(parseGateway('gw')).toEqual({ host: 'gw', port: 2222 });
    expect(parseGateway('[fd00::1]:22')).toEqual({ host: 'fd00::1', port: 22 });
    for (const bad of ['gw:0', 'gw:x', 'fd00::1', '']) expect(() => parseGateway(bad), bad).toThrow(/bad SSH gateway/);
    expect(gatewayFor(undefined, undefined, 'http://[::1]:8080')).toEqual({ host: '::1', port: 2222 });
    expect(gatewayFor(undefined, 'env:1', 'http://api:8080')).toEqual({ host: 'env', port: 1 });
    expect(gatewayFor('flag:2', 'env:1', 'http://api:8080')).toEqual({ host: 'flag', port: 2 });
    expect(sshArgv('l-1', '10.0.0.5', { host: '::1', port: 2222 }, ['-v'])).toEqual(['ssh', '-J', 'ssh://l-1@[::1]:2222', 'root@10.0.0.5', '-v']);
  });

  it("finds the board's address: the lease's boardIp, its iSCSI ACL address, else the board record", async () => {
    const lease = { id: 'l-1', kind: 'board', boardId: 'b1', state: 'active' } as Lease;
    const asked: string[] = [];
    const admin = { call: async (_m: string, path: string) => (asked.push(path), { ip: '10.0.0.9' }) } as never;
    const tenant = { call: async () => Promise.reject(new ApiError(403, '403: admin only')) } as never;
    expect(await boardIpOf(admin, { ...lease, boardIp: '10.0.0.7' })).toBe('10.0.0.7');
    expect(await boardIpOf(tenant, { ...lease, iscsi: { initiatorAddress: '10.0.0.8' } } as Lease)).toBe('10.0.0.8');
    expect(await boardIpOf(admin, lease)).toBe('10.0.0.9');
    expect(asked).toEqual(['/boards/b1']);
    await expect(boardIpOf(tenant, lease)).rejects.toThrow(/pass it with --ip/);
    await expect(boardIpOf(admin, { ...lease, state: 'released' })).rejects.toThrow('lease l-1 is released');
    await expect(boardIpOf(admin, { ...lease, kind: 'container', boardId: undefined })).rejects.toThrow(/is a container/);
  });

  it('reads the arch from DHCP option 93', () => {
    expect([0x0a, 0x15, 0x0b, 0x16, 0x00, undefined].map(archOfClient)).toEqual(['armv7', 'armv7', 'arm64', 'arm64', undefined, undefined]);
  });
});

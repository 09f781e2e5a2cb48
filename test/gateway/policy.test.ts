import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { checkDirectTcpip, findLeaseKey, grantProblem, leaseUsable, parseGatewayUser, parsePublicKey, type GatewayLease, type Grant } from '../../src/gateway/policy.js';

const dir = mkdtempSync(join(tmpdir(), 'dozen-gw-policy-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function pub(name: string, type = 'ed25519'): string {
  execFileSync('ssh-keygen', ['-q', '-t', type, '-N', '', '-C', name, '-f', join(dir, name)]);
  return readFileSync(join(dir, `${name}.pub`), 'utf8').trim();
}

const a = pub('a');
const b = pub('b');
const keyOf = (line: string) => {
  const k = parsePublicKey(line)!;
  return { algo: k.algo, blob: k.blob };
};
const lease: GatewayLease = { id: 'l1', tenantId: 't1', sshKeys: [b, a], boardId: 'bd1', boardIp: '10.0.0.5', active: true, epoch: 3 };
const grant: Grant = { user: { kind: 'jump', leaseId: 'l1' }, key: keyOf(a), boardId: 'bd1', boardIp: '10.0.0.5', epoch: 3 };

describe('gateway user names', () => {
  it('parses jump and console users, and refuses names that can name no lease', () => {
    expect(parseGatewayUser('l1')).toEqual({ kind: 'jump', leaseId: 'l1' });
    expect(parseGatewayUser('console+l1')).toEqual({ kind: 'console', leaseId: 'l1' });
    for (const bad of ['', 'console+', '../etc', 'a b', 'console+console+l1', 'x'.repeat(200), 'l1\n']) expect(parseGatewayUser(bad)).toBeUndefined();
  });
});

describe('lease keys', () => {
  it('matches by algorithm and key blob, whatever the comment', () => {
    const renamed = a.replace(/ a$/, ' someone-else');
    expect(findLeaseKey(lease, keyOf(renamed))).toBeDefined();
    expect(findLeaseKey({ ...lease, sshKeys: [b] }, keyOf(a))).toBeUndefined();
    expect(findLeaseKey(undefined, keyOf(a))).toBeUndefined();
  });

  it('a key of another algorithm with the same blob bytes does not match; a malformed key line matches nothing', () => {
    expect(findLeaseKey(lease, { algo: 'ssh-rsa', blob: keyOf(a).blob })).toBeUndefined();
    expect(findLeaseKey({ ...lease, sshKeys: ['ssh-ed25519 not-base64!!', 'garbage', a] }, keyOf(a))).toBeDefined();
    expect(parsePublicKey('ssh-ed25519 AAAA')).toBeUndefined();
  });

  it('rsa and ecdsa keys work as well', () => {
    const e = pub('e', 'ecdsa');
    const r = pub('r', 'rsa');
    expect(keyOf(r).algo).toBe('ssh-rsa');
    expect(findLeaseKey({ ...lease, sshKeys: [e, r] }, keyOf(e))).toBeDefined();
    expect(findLeaseKey({ ...lease, sshKeys: [e, r] }, keyOf(r))).toBeDefined();
  });
});

describe('direct-tcpip decision', () => {
  it("allows exactly the lease board's IP and the allowed port", () => {
    expect(checkDirectTcpip(grant, lease, { host: '10.0.0.5', port: 22 }, 22)).toEqual({ ok: true, host: '10.0.0.5', port: 22 });
  });

  it.each([
    ['another board', { host: '10.0.0.6', port: 22 }],
    ['another port', { host: '10.0.0.5', port: 80 }],
    ['a host name, even one that resolves to the board', { host: 'localhost', port: 22 }],
    ['another spelling of the IP', { host: '10.0.0.05', port: 22 }],
    ['the controller', { host: '127.0.0.1', port: 22 }],
  ])('refuses %s', (_what, dest) => {
    expect(checkDirectTcpip(grant, lease, dest, 22).ok).toBe(false);
  });

  it('refuses the console user, an inactive, released, moved or reimaged lease, and a key taken off it', () => {
    const dest = { host: '10.0.0.5', port: 22 };
    expect(checkDirectTcpip({ ...grant, user: { kind: 'console', leaseId: 'l1' } }, lease, dest, 22).ok).toBe(false);
    expect(checkDirectTcpip(grant, { ...lease, active: false }, dest, 22).ok).toBe(false);
    expect(checkDirectTcpip(grant, undefined, dest, 22).ok).toBe(false);
    expect(checkDirectTcpip(grant, { ...lease, boardIp: '10.0.0.9' }, { host: '10.0.0.9', port: 22 }, 22).ok).toBe(false);
    expect(checkDirectTcpip(grant, { ...lease, epoch: 4 }, dest, 22).ok).toBe(false);
    expect(checkDirectTcpip(grant, { ...lease, sshKeys: [b] }, dest, 22).ok).toBe(false);
  });
});

describe('grant lifetime', () => {
  it('holds while the lease is as granted, and says why not otherwise', () => {
    expect(grantProblem(grant, lease)).toBeNull();
    expect(grantProblem(grant, undefined)).toMatch(/no longer active/);
    expect(grantProblem(grant, { ...lease, active: false })).toMatch(/no longer active/);
    expect(grantProblem(grant, { ...lease, boardId: 'bd2' })).toMatch(/another board/);
    expect(grantProblem(grant, { ...lease, epoch: 4 })).toMatch(/reimaged/);
    expect(grantProblem(grant, { ...lease, sshKeys: [b] })).toMatch(/key was removed/);
  });

  it('only an active lease with a board may be granted (a jump also needs its IP)', () => {
    expect(leaseUsable({ kind: 'jump', leaseId: 'l1' }, lease)).toBe(true);
    expect(leaseUsable({ kind: 'jump', leaseId: 'l1' }, { ...lease, boardIp: undefined })).toBe(false);
    expect(leaseUsable({ kind: 'console', leaseId: 'l1' }, { ...lease, boardIp: undefined })).toBe(true);
    expect(leaseUsable({ kind: 'console', leaseId: 'l1' }, { ...lease, boardId: undefined })).toBe(false);
    expect(leaseUsable({ kind: 'jump', leaseId: 'l1' }, { ...lease, active: false })).toBe(false);
    expect(leaseUsable({ kind: 'jump', leaseId: 'l1' }, undefined)).toBe(false);
  });
});

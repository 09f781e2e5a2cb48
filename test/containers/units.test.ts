/** Container-lease building blocks that need no Docker engine: placement, tar, quota support, pool health. */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { HostUnavailableError, isConnectionError, mapEngineError } from '../../src/containers/errors.js';
import { ContainerHost, platformOfArch, quotaSupport } from '../../src/containers/host.js';
import { platformOfImage } from '../../src/containers/images.js';
import { choosePlacement, NoCapacityError, type PlacementCandidate } from '../../src/containers/placement.js';
import { ContainerPool, type HostState } from '../../src/containers/pool.js';
import { tar } from '../../src/containers/tar.js';
import { containerLeaseSpecSchema } from '../../src/containers/types.js';
import { NotFoundError } from '../../src/util/errors.js';

const board = (id: string, freeMb: number, extra: Partial<PlacementCandidate> = {}): PlacementCandidate => ({
  id,
  unavailable: null,
  freeMb,
  cpus: 4,
  platforms: ['linux/arm/v7'],
  ...extra,
});

describe('placement', () => {
  const need = { memoryMb: 512, cpus: 1, platform: 'linux/arm/v7' };

  it('picks the board with the most free memory that fits; ties go to the lower id', () => {
    expect(choosePlacement([board('bpi-s1', 600), board('bpi-s2', 900), board('bpi-s3', 300)], need)).toBe('bpi-s2');
    expect(choosePlacement([board('bpi-s2', 900), board('bpi-s1', 900)], need)).toBe('bpi-s1');
  });

  it('throws 409 with every board\'s reason when none fits', () => {
    const boards = [board('bpi-s1', 200), board('bpi-s2', 0, { unavailable: 'is down' })];
    let err: unknown;
    try {
      choosePlacement(boards, need);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(NoCapacityError);
    expect(err).toMatchObject({ status: 409, message: 'no shared board has 512 MiB free: bpi-s1 has 200 MiB, bpi-s2 is down' });
    expect((err as NoCapacityError).candidates).toEqual(boards);
  });

  it('skips boards of another platform or with too few CPUs, and says so', () => {
    const boards = [board('bpi-s1', 4000, { platforms: ['linux/arm64'] }), board('bpi-s2', 4000, { cpus: 2 }), board('bpi-s3', 100)];
    expect(() => choosePlacement(boards, { memoryMb: 512, cpus: 3, platform: 'linux/arm/v7' })).toThrow(
      'no shared board has 512 MiB free: bpi-s1 runs linux/arm64 only, bpi-s2 has 2 CPUs, bpi-s3 has 100 MiB',
    );
    expect(() => choosePlacement([], need)).toThrow('no shared board has 512 MiB free: no shared board is configured');
    // Unknown image platform: every board is a candidate (the driver checks after choosing).
    expect(choosePlacement(boards, { memoryMb: 512, cpus: 1, platform: null })).toBe('bpi-s1');
  });

  it("the 409's headline names a missing disk quota or boot-network fence by the reason's kind, not its wording", () => {
    const quota = board('bpi-s1', 0, { unavailable: 'cannot enforce a disk quota (overlay2 on extfs)', unavailableKind: 'quota' });
    const fence = board('bpi-s2', 0, { unavailable: 'is not fenced from the boot network (probe reached 10.0.0.1:3260)', unavailableKind: 'unfenced' });
    expect(() => choosePlacement([quota, fence], need)).toThrow(/^no shared board has 512 MiB free and enforces a disk quota and is fenced from the boot network: bpi-s1 cannot/);
    // A reason worded alike but of another kind (a down board's error text) adds nothing to the headline.
    const lookalike = board('bpi-s3', 0, { unavailable: 'cannot enforce a disk quota today: unreachable', unavailableKind: 'down' });
    expect(() => choosePlacement([lookalike], need)).toThrow(/^no shared board has 512 MiB free: bpi-s3 cannot/);
  });
});

describe('tar writer', () => {
  it('writes entries GNU tar reads back with their modes and owners', () => {
    const dir = mkdtempSync(join(tmpdir(), 'dozen-tar-'));
    const file = join(dir, 'a.tar');
    writeFileSync(
      file,
      tar([
        { path: 'root', mode: 0o700 },
        { path: 'root/.ssh', mode: 0o700 },
        { path: 'root/.ssh/authorized_keys', mode: 0o600, content: 'ssh-ed25519 AAAA x\n' },
      ]),
    );
    const listing = execFileSync('tar', ['-tvf', file, '--numeric-owner'], { encoding: 'utf8' });
    expect(listing).toMatch(/^drwx------ 0\/0 .* root\/$/m);
    expect(listing).toMatch(/^-rw------- 0\/0 +19 .* root\/\.ssh\/authorized_keys$/m);
    execFileSync('tar', ['-xf', file, '-C', dir]);
    expect(readFileSync(join(dir, 'root/.ssh/authorized_keys'), 'utf8')).toBe('ssh-ed25519 AAAA x\n');
    expect(statSync(join(dir, 'root/.ssh/authorized_keys')).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'root/.ssh')).mode & 0o777).toBe(0o700);
  });
});

describe('board facts', () => {
  it('maps docker info architectures to platforms', () => {
    expect(platformOfArch('armv7l')).toBe('linux/arm/v7');
    expect(platformOfArch('aarch64')).toBe('linux/arm64');
    expect(platformOfArch('x86_64')).toBe('linux/amd64');
  });

  it('knows which storage drivers can limit a container\'s disk', () => {
    expect(quotaSupport('btrfs', 'btrfs').mode).toBe('yes');
    expect(quotaSupport('overlay2', 'xfs').mode).toBe('try');
    expect(quotaSupport('overlay2', 'extfs')).toEqual({
      mode: 'no',
      detail: 'overlay2 on extfs has no per-container quota (needs overlay2 on xfs with pquota, btrfs or zfs)',
    });
  });

  it("reads an image's platform from our label first (docker import drops --platform)", () => {
    expect(platformOfImage({ Os: 'linux', Architecture: 'amd64', Config: { Labels: { 'dozen.platform': 'linux/arm/v7' } } })).toBe('linux/arm/v7');
    expect(platformOfImage({ Os: 'linux', Architecture: 'arm', Variant: 'v7', Config: { Labels: null } })).toBe('linux/arm/v7');
  });

  it('validates lease specs', () => {
    const ok = { leaseId: 'l-1', tenantId: 't-1', image: 'x:1', memoryMb: 64, cpus: 0.5, sshKeys: ['ssh-ed25519 AAAAC3Nz me@x'], hostname: 'c1' };
    expect(containerLeaseSpecSchema.safeParse(ok).success).toBe(true);
    expect(containerLeaseSpecSchema.safeParse({ ...ok, hostname: 'a_b' }).success).toBe(false);
    expect(containerLeaseSpecSchema.safeParse({ ...ok, sshKeys: ['command="x" ssh-ed25519 AAAA'] }).success).toBe(false);
    expect(containerLeaseSpecSchema.safeParse({ ...ok, leaseId: '../x' }).success).toBe(false);
  });
});

describe('engine errors', () => {
  it('tells "unreachable" from "Docker said no" and names the board', () => {
    const refused = Object.assign(new Error('connect ECONNREFUSED 10.0.0.5:2376'), { code: 'ECONNREFUSED' });
    expect(isConnectionError(refused)).toBe(true);
    const mapped = mapEngineError('bpi-s1', 'bpi-s1 (tcp://10.0.0.5:2376)', 'start container lease l1', refused);
    expect(mapped).toBeInstanceOf(HostUnavailableError);
    expect(mapped).toMatchObject({
      status: 503,
      reason: 'ECONNREFUSED',
      message: 'shared board bpi-s1 (tcp://10.0.0.5:2376): Docker engine unreachable while trying to start container lease l1 (ECONNREFUSED)',
    });
    const said = Object.assign(new Error('(HTTP code 409) unexpected - Conflict. The container name is in use '), {
      statusCode: 409,
      json: { message: 'Conflict. The container name is in use' },
    });
    expect(isConnectionError(said)).toBe(false);
    expect(mapEngineError('bpi-s1', 'bpi-s1', 'create x', said)).toMatchObject({ status: 502, message: 'shared board bpi-s1: could not create x: Conflict. The container name is in use' });
    const missing = Object.assign(new Error('no such container'), { statusCode: 404 });
    expect(mapEngineError('bpi-s1', 'bpi-s1', 'inspect', missing, 'container x')).toBeInstanceOf(NotFoundError);
  });
});

describe('pool health', () => {
  it('marks a board down after failed pings, emits down/up, and honours the operator', async () => {
    // A real engine address where nothing listens: the socket file does not exist.
    const dead = new ContainerHost({ id: 'bpi-dead', socketPath: '/run/dozen-no-such-engine.sock' });
    const pool = new ContainerPool([dead], { failThreshold: 2, pingTimeoutMs: 500 });
    const events: string[] = [];
    pool.on('down', (s: HostState) => events.push(`down:${s.id}`));
    pool.on('up', (s: HostState) => events.push(`up:${s.id}`));
    expect(pool.state('bpi-dead')).toMatchObject({ health: 'unknown', markedDown: false });
    expect(pool.isUsable('bpi-dead')).toBe(true);
    await pool.check();
    expect(pool.state('bpi-dead')).toMatchObject({ health: 'unknown', failures: 1 });
    await pool.check();
    expect(pool.state('bpi-dead')).toMatchObject({ health: 'down', failures: 2, reason: 'unreachable: ENOENT' });
    expect(pool.downReason('bpi-dead')).toBe('is down (unreachable: ENOENT)');
    expect(events).toEqual(['down:bpi-dead']);
    // Every call counts: a failed call on a down board keeps it down.
    await expect(dead.facts()).rejects.toMatchObject({ status: 503, message: /bpi-dead \(unix:\/\/\/run\/dozen-no-such-engine.sock\)/ });
    pool.noteSuccess('bpi-dead');
    expect(events).toEqual(['down:bpi-dead', 'up:bpi-dead']);
    pool.markDown('bpi-dead', 'replacing its SD card');
    expect(pool.isUsable('bpi-dead')).toBe(false);
    expect(pool.downReason('bpi-dead')).toBe('is down (marked by operator: replacing its SD card)');
    pool.noteSuccess('bpi-dead'); // healthy, but the operator said down
    expect(pool.isUsable('bpi-dead')).toBe(false);
    pool.markUp('bpi-dead');
    expect(pool.isUsable('bpi-dead')).toBe(true);
    expect(events).toEqual(['down:bpi-dead', 'up:bpi-dead', 'down:bpi-dead', 'up:bpi-dead']);
    expect(() => pool.get('nope')).toThrow(NotFoundError);
  });

  it('refuses a TCP engine without TLS material', () => {
    expect(() => new ContainerHost({ id: 'bpi-x', host: '10.0.0.5' })).toThrow(/ca, cert and key/);
    expect(() => new ContainerHost({ id: 'bpi-x' })).toThrow(/exactly one of socketPath or host/);
  });
});

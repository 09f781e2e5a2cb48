/**
 * #18.10: a tenant is root on the whole board and may rewrite its boot firmware. The FirmwareDriver
 * contract (file and command drivers, real files and real shell commands), then the release job: a
 * tampered firmware is restored before the board goes back to the pool, and a firmware that cannot be
 * restored keeps the board out of the pool, visibly.
 */
import { closeSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { FirmwareDriver } from '../../src/firmware/driver.js';
import { firmwareDriver } from '../../src/firmware/registry.js';
import { apiHarness } from '../helpers/api-harness.js';

const work = mkdtempSync(join(tmpdir(), 'dozen-firmware-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));
const GOOD = Buffer.from('U-Boot 2023.01 known good\n'.repeat(100));
const EVIL = Buffer.from('U-Boot 2023.01 with a boot hook that sends the next tenant\'s secrets away\n');

/** Each driver over a firmware "device" it can tamper with. */
const drivers: Array<{ name: string; make: (dir: string) => { fw: FirmwareDriver; tamper: () => void; read: () => Buffer } }> = [
  {
    name: 'file',
    make: (dir) => {
      const path = join(dir, 'u-boot.bin');
      const golden = join(dir, 'golden.bin');
      writeFileSync(golden, GOOD);
      writeFileSync(path, GOOD);
      return { fw: firmwareDriver({ driver: 'file', path, golden }), tamper: () => writeFileSync(path, EVIL), read: () => readFileSync(path) };
    },
  },
  {
    name: 'file in place',
    make: (dir) => {
      const path = join(dir, 'sd.img');
      const golden = join(dir, 'golden.img');
      writeFileSync(golden, GOOD);
      writeFileSync(path, GOOD);
      return { fw: firmwareDriver({ driver: 'file', path, golden, inPlace: true }), tamper: () => writeFileSync(path, EVIL), read: () => readFileSync(path) };
    },
  },
  {
    name: 'command',
    make: (dir) => {
      // the operator's scripts: compare the "flash" with the known-good image, reflash it
      const flash = join(dir, 'spi.bin');
      const golden = join(dir, 'golden.bin');
      writeFileSync(golden, GOOD);
      writeFileSync(flash, GOOD);
      return {
        fw: firmwareDriver({ driver: 'command', verify: `cmp -s '${flash}' '${golden}' || { echo 'flash differs' >&2; exit 1; }`, restore: `cp '${golden}' '${flash}'` }),
        tamper: () => writeFileSync(flash, EVIL),
        read: () => readFileSync(flash),
      };
    },
  },
];

describe.each(drivers)('FirmwareDriver contract: $name', ({ name, make }) => {
  it('verifies good firmware, detects a rewrite, restores the known-good image', async () => {
    const dir = mkdtempSync(join(work, `${name}-`));
    const { fw, tamper, read } = make(dir);
    expect((await fw.verify()).ok).toBe(true);
    tamper();
    const bad = await fw.verify();
    expect(bad.ok).toBe(false);
    expect(bad.detail).toMatch(/differs|expected/);
    await fw.restore();
    expect(read().equals(GOOD)).toBe(true);
    expect((await fw.verify()).ok).toBe(true);
  });
});

describe('file firmware in place', () => {
  it('a reader that holds the file open (QEMU and its SD card) sees the restored image, not the tenant’s', async () => {
    const dir = mkdtempSync(join(work, 'open-'));
    const path = join(dir, 'sd.img');
    const golden = join(dir, 'golden.img');
    writeFileSync(golden, GOOD);
    writeFileSync(path, GOOD);
    const fd = openSync(path, 'r+');
    try {
      writeSync(fd, EVIL, 0, EVIL.length, 0); // the tenant rewrites its card through the board
      const fw = firmwareDriver({ driver: 'file', path, golden, inPlace: true });
      expect((await fw.verify()).ok).toBe(false);
      await fw.restore();
      const seen = Buffer.alloc(GOOD.length);
      readSync(fd, seen, 0, seen.length, 0);
      expect(seen.equals(GOOD)).toBe(true);
      // Without inPlace (a rename), the open file would still hold the tenant's bytes.
      writeSync(fd, EVIL, 0, EVIL.length, 0);
      await firmwareDriver({ driver: 'file', path, golden }).restore();
      readSync(fd, seen, 0, EVIL.length, 0);
      expect(seen.subarray(0, EVIL.length).equals(EVIL)).toBe(true);
    } finally {
      closeSync(fd);
    }
  });
});

describe('firmware registry', () => {
  it('names the known drivers for an unknown one, and checks parameters', () => {
    expect(() => firmwareDriver({ driver: 'jtag9000' })).toThrow(/unknown firmware driver "jtag9000" \(known: file, command\)/);
    expect(() => firmwareDriver({ driver: 'file', path: '/x' })).toThrow(/bad parameters for firmware driver "file"/);
  });
});

describe('release restores firmware before the board returns to the pool', () => {
  it('a rewritten firmware is restored at release; one that cannot be restored keeps the board in error', async () => {
    const h = await apiHarness({ timeouts: { actionMs: 10_000, bootMs: 600_000, osMs: 600_000 } });
    try {
      const dir = mkdtempSync(join(work, 'release-'));
      const path = join(dir, 'u-boot.bin');
      const golden = join(dir, 'golden.bin');
      writeFileSync(golden, GOOD);
      writeFileSync(path, GOOD);
      const board = { id: 'fw-1', mac: '02:00:00:00:f0:01', model: 'bananapi', arch: 'armv7', ip: '10.77.0.150', power: { driver: 'command', on: 'true', off: 'true', cycle: 'true' }, firmware: { driver: 'file', path, golden }, image: 'test' };
      expect((await h.api('POST', '/boards', board)).status).toBe(201);
      const token = (await h.api('POST', '/tenants', { id: 'mel', name: 'Mel' })).body.token;

      // 1. The tenant rewrites the firmware; release restores it, and says so in the board's events.
      const a = (await h.api('POST', '/leases', { image: 'test', board: 'fw-1' }, token)).body;
      writeFileSync(path, EVIL);
      const rel = (await h.api('DELETE', `/leases/${a.lease.id}`, undefined, token)).body;
      const job = await h.leases.settle(rel.job.id);
      expect(job.steps.find((s) => s.name === 'firmware')).toMatchObject({ state: 'done' });
      expect(readFileSync(path).equals(GOOD)).toBe(true);
      expect(h.events.list('fw-1').map((e) => e.message)).toEqual(expect.arrayContaining([expect.stringMatching(/^firmware differs \(sha256 \w+, expected \w+\): restoring$/), 'firmware restored to the known-good image']));
      expect((await h.api('GET', '/boards/fw-1')).body.state).toBe('available');

      // 2. The known-good image is gone: the restore fails, the board stays out of the pool, visibly.
      const b = (await h.api('POST', '/leases', { image: 'test', board: 'fw-1' }, token)).body;
      writeFileSync(path, EVIL);
      rmSync(golden);
      const rel2 = (await h.api('DELETE', `/leases/${b.lease.id}`, undefined, token)).body;
      const job2 = await h.leases.settle(rel2.job.id);
      expect(job2.state).toBe('failed');
      expect(job2.steps.find((s) => s.name === 'firmware')).toMatchObject({ state: 'failed' });
      const shown = (await h.api('GET', '/boards/fw-1')).body;
      expect(shown.state).toBe('error');
      expect(shown.stateReason).toMatch(/firmware/);
      // the next lease cannot get it
      expect((await h.api('POST', '/leases', { image: 'test', board: 'fw-1' }, token)).status).toBe(409);
    } finally {
      await h.close();
    }
  }, 120_000);
});

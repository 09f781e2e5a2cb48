/**
 * #18.6: an imported image must not carry host files into lease disks. Real qemu-img images with a
 * backing file and with an external data file, both pointing at a host file holding a marker, are
 * refused before anything is converted; a boot partition of a kind we do not mount is refused, not
 * loop-mounted; and a plain qcow2 (the positive control) still converts.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expandDisk } from '../../src/images/expand.js';
import { openFs } from '../../src/images/fs-reader.js';
import { requireTools } from '../helpers/tools.js';

const work = mkdtempSync(join(tmpdir(), 'dozen-import-safety-'));
const MARKER = 'HOST-SECRET-MARKER-5f1c';
const host = join(work, 'host-disk.raw'); // stands in for /dev/sda or another lease's disk
const opts = { onBytes: () => {}, maxBytes: 1 << 30 };
const qemuImg = (...a: string[]) => execFileSync('qemu-img', a, { stdio: 'pipe' });

beforeAll(() => {
  requireTools('qemu-img', 'mkfs.btrfs');
  const buf = Buffer.alloc(1 << 20);
  buf.write(MARKER, 4096);
  writeFileSync(host, buf);
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('safe import', () => {
  it('a plain qcow2 converts (control)', async () => {
    const src = join(work, 'plain.qcow2');
    qemuImg('convert', '-f', 'raw', '-O', 'qcow2', host, src);
    const out = join(work, 'plain.raw');
    await expandDisk(src, 'qcow2', out, opts);
    expect(readFileSync(out).includes(MARKER)).toBe(true); // its own copy of the bytes: allowed
  });

  it('a qcow2 with a backing file is refused, and nothing of the host file is read', async () => {
    const src = join(work, 'backed.qcow2');
    qemuImg('create', '-f', 'qcow2', '-F', 'raw', '-b', host, src);
    const out = join(work, 'backed.raw');
    await expect(expandDisk(src, 'qcow2', out, opts)).rejects.toThrow(/the qcow2 image has a backing file/);
    expect(existsSync(out) && readFileSync(out).includes(MARKER)).toBe(false);
  });

  it('a qcow2 with an external data file is refused', async () => {
    const src = join(work, 'datafile.qcow2');
    qemuImg('create', '-f', 'qcow2', '-o', `data_file=${host},data_file_raw=on`, src, '1M');
    const out = join(work, 'datafile.raw');
    await expect(expandDisk(src, 'qcow2', out, opts)).rejects.toThrow(/external data file/);
    expect(existsSync(out) && readFileSync(out).includes(MARKER)).toBe(false);
  });

  it('a btrfs boot partition is refused instead of loop-mounted', async () => {
    const img = join(work, 'btrfs.img');
    writeFileSync(img, Buffer.alloc(0));
    execFileSync('truncate', ['-s', '128M', img]);
    execFileSync('mkfs.btrfs', ['-q', img]);
    await expect(openFs(img, 0, null, { type: 'btrfs' })).rejects.toThrow(/boot files on a btrfs partition cannot be read safely/);
    expect(readFileSync('/proc/mounts', 'utf8')).not.toContain('dozen-bootfs-');
  });
});

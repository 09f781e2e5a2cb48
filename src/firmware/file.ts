import { createHash } from 'node:crypto';
import { copyFile, readFile, rename, writeFile } from 'node:fs/promises';
import type { FirmwareCheck, FirmwareDriver } from './driver.js';

/**
 * Firmware kept in a file the board boots from (the lab: each QEMU board's own U-Boot image, loaded at
 * its start, or its SD card). `golden` is the known-good image; restore copies it over atomically, or,
 * with `inPlace`, into the same file: an SD card image that a running QEMU holds open must change under
 * it (a rename would leave QEMU reading the tenant's version until it restarts).
 */
export class FileFirmware implements FirmwareDriver {
  constructor(private readonly s: { path: string; golden: string; inPlace?: boolean }) {}

  async verify(): Promise<FirmwareCheck> {
    const [have, want] = await Promise.all([digest(this.s.path), digest(this.s.golden)]);
    if (!want) throw new Error(`the known-good firmware ${this.s.golden} is missing`);
    if (!have) return { ok: false, detail: 'firmware image missing' };
    return have === want ? { ok: true, detail: `sha256 ${have.slice(0, 12)} as expected` } : { ok: false, detail: `sha256 ${have.slice(0, 12)}, expected ${want.slice(0, 12)}` };
  }

  async restore(): Promise<void> {
    if (this.s.inPlace) {
      await writeFile(this.s.path, await readFile(this.s.golden)); // truncate + write, same inode
    } else {
      const tmp = `${this.s.path}.restore`;
      await copyFile(this.s.golden, tmp);
      await rename(tmp, this.s.path);
    }
    const after = await this.verify();
    if (!after.ok) throw new Error(`firmware restore did not take: ${after.detail}`);
  }
}

async function digest(path: string): Promise<string | null> {
  const data = await readFile(path).catch(() => null);
  return data ? createHash('sha256').update(data).digest('hex') : null;
}

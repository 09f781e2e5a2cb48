import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A tiny image directory (files with known bytes) in the built-image layout: <root>/<name>/build/. */
export function makeImageRoot(name = 'test', arch = 'armv7'): string {
  const root = mkdtempSync(join(tmpdir(), 'images-'));
  const dir = join(root, name, 'build');
  mkdirSync(join(dir, 'dtbs'), { recursive: true });
  writeFileSync(join(dir, 'vmlinuz'), Buffer.alloc(300_000, 7));
  writeFileSync(join(dir, 'initrd.img'), Buffer.alloc(100_000, 9));
  writeFileSync(join(dir, 'dtbs', 'sun7i-a20-bananapi.dtb'), Buffer.alloc(30_000, 3));
  writeFileSync(
    join(dir, 'manifest.json'),
    JSON.stringify({ name, arch, kernel: 'vmlinuz', initrd: 'initrd.img', dtbs: { bananapi: 'dtbs/sun7i-a20-bananapi.dtb' }, cmdline: 'console={{console}} quiet' }),
  );
  return root;
}

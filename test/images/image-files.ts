/** What the image tests (debian-12, docker-host) share: running an image's build, and reading what it wrote. */
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { createServer as netServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

export type Arch = 'armv7' | 'arm64';
/** What build.sh writes per architecture into the manifest, besides the catalog's fields. */
export interface ArchEntry {
  kernel: string;
  initrd: string;
  flavour: string;
  dtbs: Record<string, string>;
  rootDisk: string;
  kernelVersion: string;
  packages: Record<string, string>;
}

/** Runs images/<name>/build.sh; its output on failure, and how long it took. */
export function runImageBuild(name: string, ...args: string[]): { stderr: string; ms: number } {
  const t0 = Date.now();
  const r = spawnSync('bash', [join(REPO, 'images', name, 'build.sh'), ...args], { encoding: 'utf8', timeout: 3_000_000 });
  if (r.status !== 0) throw new Error(`images/${name}/build.sh ${args.join(' ')} failed (status ${r.status}, signal ${r.signal}):\n${r.stderr}${r.stdout}`);
  return { stderr: r.stderr, ms: Date.now() - t0 };
}

export const sha256File = (file: string) =>
  new Promise<string>((res, rej) => {
    const h = createHash('sha256');
    createReadStream(file).on('data', (d) => h.update(d)).on('end', () => res(h.digest('hex'))).on('error', rej);
  });

/** Every regular file under `dir`, relative, dot files left out (.inputs, .lock). */
export function listFiles(dir: string, sub = ''): string[] {
  return readdirSync(join(dir, sub), { withFileTypes: true }).flatMap((e) => {
    if (e.name.startsWith('.')) return [];
    const rel = sub ? `${sub}/${e.name}` : e.name;
    return e.isDirectory() ? listFiles(dir, rel) : e.isFile() ? [rel] : [];
  });
}

/** Readers of the root disks in an image's build folder, with debugfs (no mount). */
export function rootDisks(out: string) {
  /** A file's details inside a root disk. */
  const debugfs = (disk: string, request: string): string =>
    execFileSync('debugfs', ['-R', request, join(out, disk)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], maxBuffer: 64 << 20 });
  /** The ELF e_machine of a file inside a root disk (40: ARM, 183: AArch64). */
  const elfMachine = (disk: string, path: string): number => {
    const tmp = mkdtempSync(join(tmpdir(), 'image-elf-'));
    try {
      execFileSync('debugfs', ['-R', `dump ${path} ${tmp}/f`, join(out, disk)], { stdio: 'ignore' });
      const b = readFileSync(join(tmp, 'f'));
      expect(b.toString('latin1', 0, 4), `${disk}:${path} is an ELF file`).toBe('\x7fELF');
      return b.readUInt16LE(18);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  };
  return { debugfs, elfMachine };
}

export const freePort = () =>
  new Promise<number>((res, rej) => {
    const s = netServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as AddressInfo).port;
      s.close(() => res(port));
    });
  });

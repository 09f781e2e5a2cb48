/**
 * The ARMv7 test image (images/test/build.sh): built from Debian armhf packages, checked file by
 * file, and booted directly (no U-Boot) on an emulated QEMU `virt` board to a root shell.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { beforeAll, describe, expect, it } from 'vitest';
import { manifestSchema } from '../../src/images/catalog.js';
import { requireTools } from '../helpers/tools.js';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const BUILD_SH = join(REPO, 'images/test/build.sh');
const OUT = join(REPO, 'images/test/build');
const ARTIFACTS = join(REPO, 'test-artifacts');

/** Under TCG (no KVM for ARM guests on an x86 host) a cold boot of the armmp kernel takes a while. */
const BOOT_TIMEOUT_MS = 120_000;

function runBuild(...args: string[]): { stdout: string; stderr: string } {
  const r = spawnSync('bash', [BUILD_SH, ...args], { encoding: 'utf8', timeout: 540_000 });
  if (r.status !== 0) {
    throw new Error(`images/test/build.sh ${args.join(' ')} failed (status ${r.status}, signal ${r.signal}):\n${r.stderr}${r.stdout}`);
  }
  return { stdout: r.stdout, stderr: r.stderr };
}

const sha256 = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');

interface CpioEntry {
  mode: number;
  uid: number;
  gid: number;
  data: Buffer;
}

/** Parses a newc ("070701") cpio archive; throws on anything malformed. */
function parseNewc(buf: Buffer): Map<string, CpioEntry> {
  const entries = new Map<string, CpioEntry>();
  const align4 = (n: number) => (n + 3) & ~3;
  let off = 0;
  for (;;) {
    if (off + 110 > buf.length) throw new Error(`cpio: truncated header at ${off}`);
    const magic = buf.toString('ascii', off, off + 6);
    if (magic !== '070701') throw new Error(`cpio: bad magic ${JSON.stringify(magic)} at ${off} (not newc)`);
    const field = (i: number) => parseInt(buf.toString('ascii', off + 6 + i * 8, off + 14 + i * 8), 16);
    const [mode, uid, gid, fileSize, nameSize] = [field(1), field(2), field(3), field(6), field(11)];
    const name = buf.toString('utf8', off + 110, off + 110 + nameSize - 1);
    const dataStart = align4(off + 110 + nameSize);
    if (name === 'TRAILER!!!') return entries;
    entries.set(name, { mode, uid, gid, data: buf.subarray(dataStart, dataStart + fileSize) });
    off = align4(dataStart + fileSize);
  }
}

/** Collects a child's console output and waits for patterns in it, from a moving cursor. */
class Console {
  text = '';
  private cursor = 0;
  private waiters = new Set<() => void>();
  private exited: string | null = null;

  constructor(private readonly child: ChildProcess) {
    const onData = (d: Buffer) => {
      this.text += d.toString('utf8');
      for (const w of this.waiters) w();
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.on('exit', (code, signal) => {
      this.exited = `qemu exited (code ${code}, signal ${signal})`;
      for (const w of this.waiters) w();
    });
  }

  /** Resolves with the match once `re` appears after the cursor (which then moves past it). */
  waitFor(re: RegExp, what: string, timeoutMs: number): Promise<RegExpExecArray> {
    return new Promise((res, rej) => {
      const check = () => {
        const m = re.exec(this.text.slice(this.cursor));
        if (m) {
          this.cursor += m.index + m[0].length;
          cleanup();
          res(m);
        } else if (this.exited) {
          cleanup();
          rej(new Error(`${this.exited} while waiting for ${what}; console so far:\n${this.tail()}`));
        }
      };
      const timer = setTimeout(() => {
        cleanup();
        rej(
          new Error(
            `no ${what} on the serial console within ${timeoutMs / 1000} s (QEMU TCG emulation of the ARMv7 board ` +
              `is slow, but a healthy boot reaches it far sooner); console so far:\n${this.tail()}`,
          ),
        );
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      this.waiters.add(check);
      check();
    });
  }

  send(s: string): void {
    this.child.stdin!.write(s);
  }

  tail(n = 4000): string {
    return this.text.slice(-n);
  }
}

describe('ARMv7 test image (images/test)', () => {
  let manifest: ReturnType<typeof manifestSchema.parse> & Record<string, unknown>;
  let firstBuild: { stderr: string };

  beforeAll(() => {
    requireTools('bash', 'apt-get', 'dpkg-deb', 'cpio', 'gzip', 'sha256sum', 'flock', 'qemu-system-arm');
    firstBuild = runBuild();
    const raw = JSON.parse(readFileSync(join(OUT, 'manifest.json'), 'utf8')) as Record<string, unknown>;
    manifest = { ...raw, ...manifestSchema.parse(raw) };
  }, 600_000);

  it('build is cached: a second run changes nothing and says so', () => {
    const before = ['vmlinuz', 'initrd.img', 'manifest.json'].map((f) => statSync(join(OUT, f)).mtimeMs);
    const t0 = Date.now();
    const again = runBuild();
    expect(again.stderr, firstBuild.stderr).toMatch(/up to date/);
    // How fast is for `npm run bench` (bench/e2e-bounds.ts, target 15 s); here: that nothing was rebuilt.
    console.log(`test image: warm build.sh took ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    const after = ['vmlinuz', 'initrd.img', 'manifest.json'].map((f) => statSync(join(OUT, f)).mtimeMs);
    expect(after).toEqual(before);
  });

  it('manifest follows the catalog schema and its checksums match the files', () => {
    expect(manifest.name).toBe('test');
    expect(manifest.arch).toBe('armv7');
    expect(manifest.kernel).toBe('vmlinuz');
    expect(manifest.initrd).toBe('initrd.img');
    expect(manifest.rootDisk).toBe('root.img'); // the iSCSI root disk every lease clones
    expect(manifest.cmdline).toContain('console={{console}}');
    expect(Object.keys(manifest.dtbs).sort()).toEqual(['bananapi', 'bananapro']);
    expect(manifest.kernelVersion).toMatch(/^6\.1\.0-\d+-armmp$/);
    const sums = manifest.sha256 ?? {};
    const named = [manifest.kernel, manifest.initrd!, manifest.rootDisk!, ...Object.values(manifest.dtbs)];
    for (const f of named) expect(Object.keys(sums), `sha256 of ${f}`).toContain(f);
    for (const [file, hash] of Object.entries(sums)) expect(sha256(join(OUT, file)), file).toBe(hash);
  });

  it('vmlinuz is an ARM zImage (bootz-able)', () => {
    const k = readFileSync(join(OUT, 'vmlinuz'));
    expect(k.readUInt32LE(0x24).toString(16)).toBe('16f2818');
    expect(k.length).toBeGreaterThan(2_000_000);
  });

  it('initrd is a gzip newc cpio with /init, an armhf busybox and the virtio modules', () => {
    const gz = readFileSync(join(OUT, 'initrd.img'));
    expect([gz[0], gz[1]]).toEqual([0x1f, 0x8b]);
    const entries = parseNewc(gunzipSync(gz));

    const init = entries.get('init');
    expect(init, 'init in the initrd').toBeDefined();
    expect(init!.mode & 0o170000).toBe(0o100000);
    expect(init!.mode & 0o111).toBe(0o111);
    expect(init!.data.toString('utf8', 0, 9)).toBe('#!/bin/sh');

    const bb = entries.get('bin/busybox')?.data;
    expect(bb, 'bin/busybox in the initrd').toBeDefined();
    expect(bb!.subarray(0, 4).toString('latin1')).toBe('\x7fELF');
    expect(bb![4]).toBe(1); // ELFCLASS32
    expect(bb![5]).toBe(1); // little-endian
    expect(bb!.readUInt16LE(18)).toBe(40); // EM_ARM
    expect(bb!.readUInt32LE(36) >>> 24).toBe(5); // EABI version 5 (armhf)

    const sh = entries.get('bin/sh');
    expect(sh!.mode & 0o170000).toBe(0o120000);
    expect(sh!.data.toString()).toBe('busybox');
    for (const [name, e] of entries) expect([name, e.uid, e.gid]).toEqual([name, 0, 0]);

    const kver = String(manifest.kernelVersion);
    for (const m of ['virtio_mmio', 'virtio_net', 'net_failover', 'failover', 'virtio_blk']) {
      const path = [...entries.keys()].find((p) => p.startsWith(`lib/modules/${kver}/`) && p.endsWith(`/${m}.ko`));
      expect(path, `${m}.ko in the initrd`).toBeDefined();
    }
    expect(entries.get('etc/dozen/modules.load')!.data.toString()).toMatch(/^linux,dummy-virt .*virtio_net\.ko$/m);

    // And GNU cpio itself agrees the archive is valid.
    const listed = spawnSync('sh', ['-c', `gzip -dc "${join(OUT, 'initrd.img')}" | cpio -it --quiet`], { encoding: 'utf8' });
    expect(listed.status, listed.stderr).toBe(0);
    expect(listed.stdout.split('\n')).toEqual(expect.arrayContaining(['init', 'bin/busybox', 'sbin/dozen-login']));
  });

  it('is reproducible: a forced rebuild elsewhere gives the same bytes', () => {
    const other = mkdtempSync(join(tmpdir(), 'dozen-test-image-'));
    try {
      runBuild('--force', '--out', other);
      expect(readFileSync(join(other, 'SHA256SUMS'), 'utf8')).toBe(readFileSync(join(OUT, 'SHA256SUMS'), 'utf8'));
    } finally {
      rmSync(other, { recursive: true, force: true });
    }
  }, 300_000);

  it('boots on QEMU virt to "DOZEN-TEST-IMAGE READY", a login: prompt and a root shell', async () => {
    const cmdline = 'console=ttyAMA0,115200 dozen.net=dhcp';
    const qemu = spawn(
      'qemu-system-arm',
      [
        ...['-M', 'virt', '-m', '512', '-nodefaults', '-display', 'none', '-serial', 'stdio', '-monitor', 'none'],
        ...['-kernel', join(OUT, 'vmlinuz'), '-initrd', join(OUT, 'initrd.img'), '-append', cmdline],
        // A virtio-net NIC on a hub with nothing else on it: eth0 exists, no traffic leaves QEMU, DHCP gets
        // no answer, and no host port is needed (a port picked free can be taken before QEMU binds it).
        ...['-device', 'virtio-net-device,netdev=n0', '-netdev', 'hubport,id=n0,hubid=0'],
      ],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    const con = new Console(qemu);
    const t0 = Date.now();
    try {
      await con.waitFor(/DOZEN-TEST-IMAGE READY\r?\n/, '"DOZEN-TEST-IMAGE READY" marker', BOOT_TIMEOUT_MS);
      const ready = (Date.now() - t0) / 1000;
      const kernel = await con.waitFor(/dozen: kernel (\S+) (\S+) \(/, 'kernel version line', 10_000);
      expect(kernel[1]).toBe(manifest.kernelVersion);
      expect(kernel[2]).toBe('armv7l');
      await con.waitFor(new RegExp(`dozen: cmdline ${cmdline}\\r?\\n`), 'command line echo', 10_000);
      await con.waitFor(/login: /, '"login:" prompt', 30_000);
      const login = (Date.now() - t0) / 1000;
      con.send('root\n');
      await con.waitFor(/root@dozen:~# /, 'root shell prompt "root@dozen:~# "', 30_000);
      con.send('uname -m; ls /sys/class/net; echo DONE-$((6*7))\n');
      const out = await con.waitFor(/([\s\S]*)DONE-42/, 'output of uname -m', 30_000);
      expect(out[1]).toMatch(/^armv7l\r?$/m);
      expect(out[1]).toMatch(/\beth0\b/);
      expect(con.text).toMatch(/dozen: eth0 has no DHCP lease yet/); // DHCP was tried and did not block boot
      console.log(`test image: READY after ${ready.toFixed(1)} s, login: after ${login.toFixed(1)} s (QEMU TCG)`);
    } finally {
      qemu.kill('SIGKILL');
      mkdirSync(ARTIFACTS, { recursive: true });
      writeFileSync(join(ARTIFACTS, 'test-image-boot.log'), con.text);
    }
  }, 180_000);
});

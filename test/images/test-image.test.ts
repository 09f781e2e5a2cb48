/**
 * The test image (images/test/build.sh), one image with two architectures: armv7 from Debian armhf
 * packages (armmp kernel, Banana Pi/Pro and Banana Pi M2 Ultra device trees) and arm64 from Debian
 * arm64 packages. Checked file by file, and booted directly (no U-Boot) on QEMU: ARMv7 `virt` to a root
 * shell, arm64 `virt` and the Banana Pi M2 Ultra (`bpim2u`, Allwinner R40 GMAC) to a DHCP lease from
 * QEMU's user-mode network and `login:`.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
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
/** The R40's GMAC driver loads slowly under TCG: the lease comes about 25-40 s after power-on. */
const R40_TIMEOUT_MS = 150_000;

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


/** What build.sh writes per architecture into the manifest, besides the catalog's fields. */
interface ArchEntry {
  kernel: string;
  initrd: string;
  flavour: string;
  dtbs: Record<string, string>;
  rootDisk: string;
  kernelVersion: string;
  packages: Record<string, string>;
  modules: string[];
}

/** Every regular file under `dir`, relative, dot files left out (.inputs, .lock). */
function listFiles(dir: string, sub = ''): string[] {
  return readdirSync(join(dir, sub), { withFileTypes: true }).flatMap((e) => {
    if (e.name.startsWith('.')) return [];
    const rel = sub ? `${sub}/${e.name}` : e.name;
    return e.isDirectory() ? listFiles(dir, rel) : e.isFile() ? [rel] : [];
  });
}

/** The initrd's entries, checked to be a gzip'd newc cpio. */
function readInitrd(file: string): Map<string, CpioEntry> {
  const gz = readFileSync(file);
  expect([gz[0], gz[1]]).toEqual([0x1f, 0x8b]);
  return parseNewc(gunzipSync(gz));
}

/** The path of module `name` (dashes and underscores alike) in the initrd, if it is there. */
function modulePath(entries: Map<string, CpioEntry>, kver: string, name: string): string | undefined {
  const norm = (s: string) => s.replace(/-/g, '_');
  return [...entries.keys()].find(
    (p) => p.startsWith(`lib/modules/${kver}/`) && p.endsWith('.ko') && norm(p.slice(p.lastIndexOf('/') + 1, -3)) === norm(name),
  );
}

/** Starts QEMU with its serial console on stdio; the caller kills it. */
function startQemu(bin: string, args: string[]): { qemu: ChildProcess; con: Console } {
  const qemu = spawn(bin, [...['-nodefaults', '-display', 'none', '-serial', 'stdio', '-monitor', 'none'], ...args], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  return { qemu, con: new Console(qemu) };
}

/**
 * Logs in as root at the login: prompt just seen and waits (up to 40 s, in the guest) for udhcpc's lease
 * on eth0 from QEMU's user-mode network: 10.0.2.15. /init waits only 3 s for it before going on, so the
 * lease may come after the prompt; the udhcpc script records it in /run/dozen-net.eth0 either way.
 */
async function expectLease(con: Console): Promise<void> {
  con.send('root\n');
  await con.waitFor(/root@dozen:~# /, 'root shell prompt "root@dozen:~# "', 30_000);
  con.send('i=0; while [ ! -s /run/dozen-net.eth0 ] && [ $i -lt 80 ]; do sleep 0.5; i=$((i+1)); done; echo "LE""ASE=$(cat /run/dozen-net.eth0)="\n'); // LE""ASE: the echoed input does not match
  const m = await con.waitFor(/LEASE=([^=\r\n]*)=/, 'the DHCP lease in /run/dozen-net.eth0', 60_000);
  expect(m[1], `eth0's DHCP lease; console:\n${con.tail()}`).toMatch(/^10\.0\.2\.15\/24\b/);
}

describe('test image (images/test): armv7 + arm64', () => {
  let manifest: ReturnType<typeof manifestSchema.parse>;
  let raw: { arches: Record<string, ArchEntry> } & Record<string, unknown>;
  let armv7: ArchEntry;
  let arm64: ArchEntry;
  let firstBuild: { stderr: string };

  beforeAll(() => {
    requireTools('bash', 'apt-get', 'dpkg-deb', 'cpio', 'gzip', 'xz', 'sha256sum', 'flock', 'qemu-system-arm', 'qemu-system-aarch64');
    firstBuild = runBuild();
    raw = JSON.parse(readFileSync(join(OUT, 'manifest.json'), 'utf8')) as typeof raw;
    manifest = manifestSchema.parse(raw);
    armv7 = raw.arches.armv7!;
    arm64 = raw.arches.arm64!;
  }, 600_000);

  const outputs = ['vmlinuz', 'initrd.img', 'root.img', 'arm64/Image', 'arm64/initrd.img', 'arm64/root.img', 'manifest.json'];

  it('build is cached: a second run changes nothing and says so', () => {
    const before = outputs.map((f) => statSync(join(OUT, f)).mtimeMs);
    const t0 = Date.now();
    const again = runBuild();
    expect(again.stderr, firstBuild.stderr).toMatch(/up to date/);
    // How fast is for `npm run bench` (bench/e2e-bounds.ts, target 15 s); here: that nothing was rebuilt.
    console.log(`test image: warm build.sh took ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    const after = outputs.map((f) => statSync(join(OUT, f)).mtimeMs);
    expect(after).toEqual(before);
  });

  it('manifest: both arches, the catalog schema, and checksums of every file', () => {
    expect(manifest.name).toBe('test');
    expect(manifest.cmdline).toContain('console={{console}}');
    // The multi-arch form only: the one-arch top-level fields are gone.
    for (const k of ['arch', 'kernel', 'initrd', 'dtbs', 'rootDisk']) expect(raw, k).not.toHaveProperty(k);
    expect(Object.keys(raw.arches).sort()).toEqual(['arm64', 'armv7']);
    expect(Object.keys(manifest.arches).sort()).toEqual(['arm64', 'armv7']);

    expect(armv7).toMatchObject({ kernel: 'vmlinuz', initrd: 'initrd.img', rootDisk: 'root.img', flavour: 'armmp' });
    expect(armv7.dtbs).toEqual({
      'sun7i-a20-bananapi.dtb': 'dtbs/sun7i-a20-bananapi.dtb',
      'sun7i-a20-bananapro.dtb': 'dtbs/sun7i-a20-bananapro.dtb',
      'sun8i-r40-bananapi-m2-ultra.dtb': 'dtbs/sun8i-r40-bananapi-m2-ultra.dtb',
    });
    expect(armv7.kernelVersion).toMatch(/^6\.1\.0-\d+-armmp$/);
    expect(armv7.packages['linux-image-armmp']).toBeTruthy();
    expect(armv7.packages[`linux-image-${armv7.kernelVersion}`]).toBeTruthy();
    expect(armv7.modules).toEqual(expect.arrayContaining(['virtio_net', 'dwmac_sun8i', 'i2c_mv64xxx', 'axp20x_regulator', 'stmmac', 'iscsi_tcp']));

    expect(arm64).toMatchObject({ kernel: 'arm64/Image', initrd: 'arm64/initrd.img', rootDisk: 'arm64/root.img', flavour: 'arm64' });
    expect(arm64.dtbs).toEqual({});
    expect(arm64.kernelVersion).toMatch(/^6\.1\.0-\d+-arm64$/);
    expect(arm64.packages['linux-image-arm64']).toBeTruthy();
    expect(arm64.modules).toEqual(expect.arrayContaining(['virtio_net', 'virtio_mmio', 'iscsi_tcp', 'ext4']));
    expect(arm64.modules).not.toContain('dwmac_sun8i');

    // sha256 covers exactly the image's files (everything but itself and the build's dot files) ...
    const sums = manifest.sha256 ?? {};
    const files = listFiles(OUT).filter((f) => f !== 'manifest.json' && f !== 'SHA256SUMS').sort();
    expect(Object.keys(sums).sort()).toEqual(files);
    for (const a of [armv7, arm64]) {
      for (const f of [a.kernel, a.initrd, a.rootDisk, ...Object.values(a.dtbs)]) expect(Object.keys(sums), `sha256 of ${f}`).toContain(f);
    }
    // ... and matches them, as SHA256SUMS does.
    for (const [file, hash] of Object.entries(sums)) expect(sha256(join(OUT, file)), file).toBe(hash);
    const sumsFile = readFileSync(join(OUT, 'SHA256SUMS'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => l.split(/\s+\*?/));
    expect(Object.fromEntries(sumsFile.map(([h, f]) => [f, h]))).toEqual(sums);
  });

  it('kernels: an ARM zImage (bootz) and an uncompressed arm64 Image (booti)', () => {
    const k = readFileSync(join(OUT, 'vmlinuz'));
    expect(k.readUInt32LE(0x24).toString(16)).toBe('16f2818');
    expect(k.length).toBeGreaterThan(2_000_000);
    const img = readFileSync(join(OUT, 'arm64/Image'));
    expect(img.toString('latin1', 0x38, 0x3c)).toBe('ARM\x64'); // arm64 Image magic
    expect([img[0], img[1]]).not.toEqual([0x1f, 0x8b]); // not gzip'd
    expect(img.length).toBeGreaterThan(10_000_000);
  });

  it('device trees: the A20 boards and the Banana Pi M2 Ultra (R40)', () => {
    for (const [name, path] of Object.entries(armv7.dtbs)) {
      const dtb = readFileSync(join(OUT, path));
      expect(dtb.readUInt32BE(0), name).toBe(0xd00dfeed); // FDT magic
    }
    const r40 = readFileSync(join(OUT, 'dtbs/sun8i-r40-bananapi-m2-ultra.dtb')).toString('latin1');
    expect(r40).toContain('allwinner,sun8i-r40');
    expect(r40).toContain('allwinner,sun8i-r40-gmac');
  });

  it('armv7 initrd: /init, an armhf busybox, the virtio modules and the R40 GMAC modules', () => {
    const entries = readInitrd(join(OUT, 'initrd.img'));

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
    expect(entries.get('lib/ld-linux-armhf.so.3'), 'the armhf loader (iscsistart)').toBeDefined();
    expect(entries.get('etc/dozen-release')!.data.toString()).toMatch(/^ARCH=armv7$/m);

    const kver = armv7.kernelVersion;
    for (const m of ['virtio_mmio', 'virtio_net', 'net_failover', 'failover', 'virtio_blk', 'i2c-mv64xxx', 'axp20x-regulator', 'dwmac-sun8i', 'stmmac', 'stmmac-platform']) {
      expect(modulePath(entries, kver, m), `${m}.ko in the armv7 initrd`).toBeDefined();
    }
    const load = entries.get('etc/dozen/modules.load')!.data.toString();
    expect(load).toMatch(/^linux,dummy-virt .*virtio_net\.ko$/m);
    for (const m of ['i2c-mv64xxx', 'axp20x-regulator', 'stmmac', 'dwmac-sun8i']) {
      expect(load, m).toMatch(new RegExp(`^allwinner,sun8i-r40 \\S*/${m}\\.ko$`, 'm'));
    }
    // Dependencies first: stmmac before dwmac-sun8i.
    expect(load.indexOf('/stmmac.ko')).toBeLessThan(load.indexOf('/dwmac-sun8i.ko'));
    expect(load).not.toMatch(/^(armv7|arm64):/m); // the arch qualifier of images/test/modules is not for /init
    // Every line of modules.load names a module that is in the initrd.
    for (const line of load.split('\n').filter((l) => l && !l.startsWith('#'))) {
      const path = line.split(' ')[1]!;
      expect(entries.has(`lib/modules/${kver}/${path}`), line).toBe(true);
    }

    // And GNU cpio itself agrees the archive is valid.
    const listed = spawnSync('sh', ['-c', `gzip -dc "${join(OUT, 'initrd.img')}" | cpio -it --quiet`], { encoding: 'utf8' });
    expect(listed.status, listed.stderr).toBe(0);
    expect(listed.stdout.split('\n')).toEqual(expect.arrayContaining(['init', 'bin/busybox', 'sbin/dozen-login']));
  });

  it('arm64 initrd: the same /init, an arm64 busybox and iscsistart, the virtio and iSCSI modules', () => {
    const entries = readInitrd(join(OUT, 'arm64/initrd.img'));
    const armv7Init = readInitrd(join(OUT, 'initrd.img')).get('init')!.data;
    expect(entries.get('init')!.data.equals(armv7Init), 'the same /init as armv7').toBe(true);

    const bb = entries.get('bin/busybox')?.data;
    expect(bb, 'bin/busybox in the initrd').toBeDefined();
    expect(bb!.subarray(0, 4).toString('latin1')).toBe('\x7fELF');
    expect(bb![4]).toBe(2); // ELFCLASS64
    expect(bb![5]).toBe(1); // little-endian
    expect(bb!.readUInt16LE(18)).toBe(183); // EM_AARCH64
    const iscsistart = entries.get('sbin/iscsistart')?.data;
    expect(iscsistart, 'sbin/iscsistart').toBeDefined();
    expect(iscsistart!.readUInt16LE(18)).toBe(183);
    expect(iscsistart!.toString('latin1')).toContain('/lib/ld-linux-aarch64.so.1');
    expect(entries.get('lib/ld-linux-aarch64.so.1'), 'the arm64 loader').toBeDefined();
    expect(entries.get('lib/libc.so.6')!.data.readUInt16LE(18)).toBe(183);
    expect(entries.get('sbin/dozen-login'), 'the login').toBeDefined();
    for (const [name, e] of entries) expect([name, e.uid, e.gid]).toEqual([name, 0, 0]);
    expect(entries.get('etc/dozen-release')!.data.toString()).toMatch(/^ARCH=arm64$/m);

    const kver = arm64.kernelVersion;
    for (const m of ['virtio_net', 'virtio_mmio', 'iscsi_tcp', 'sd_mod', 'ext4']) {
      expect(modulePath(entries, kver, m), `${m}.ko in the arm64 initrd`).toBeDefined();
    }
    const load = entries.get('etc/dozen/modules.load')!.data.toString();
    expect(load).toMatch(/^linux,dummy-virt .*virtio_net\.ko$/m);
    expect(load).toMatch(/^iscsi .*iscsi_tcp\.ko$/m);
    expect(load).not.toMatch(/^allwinner/m); // the A20/R40 lines are armv7's
    for (const line of load.split('\n').filter((l) => l && !l.startsWith('#'))) {
      expect(entries.has(`lib/modules/${kver}/${line.split(' ')[1]}`), line).toBe(true);
    }
  });

  it('root disks: ext4 images with iscsid for their own architecture', () => {
    for (const [disk, machine] of [
      ['root.img', 'ARM'],
      ['arm64/root.img', 'AArch64'],
    ] as const) {
      const fsck = spawnSync('e2fsck', ['-fn', join(OUT, disk)], { encoding: 'utf8' });
      expect(fsck.status, `${disk}: ${fsck.stdout}${fsck.stderr}`).toBe(0);
      const tmp = mkdtempSync(join(tmpdir(), 'dozen-rootdisk-'));
      try {
        const dump = spawnSync('debugfs', ['-R', `dump /sbin/iscsid ${tmp}/iscsid`, join(OUT, disk)], { encoding: 'utf8' });
        expect(dump.status, dump.stderr).toBe(0);
        const elf = spawnSync('readelf', ['-h', join(tmp, 'iscsid')], { encoding: 'utf8' });
        expect(elf.stdout, `${disk}: /sbin/iscsid`).toMatch(new RegExp(`Machine:\\s+${machine}\\b`));
      } finally {
        rmSync(tmp, { recursive: true, force: true });
      }
    }
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

  it('armv7: boots on QEMU virt to "DOZEN-TEST-IMAGE READY", a login: prompt and a root shell', async () => {
    const cmdline = 'console=ttyAMA0,115200 dozen.net=dhcp';
    const { qemu, con } = startQemu('qemu-system-arm', [
      ...['-M', 'virt', '-m', '512'],
      ...['-kernel', join(OUT, 'vmlinuz'), '-initrd', join(OUT, 'initrd.img'), '-append', cmdline],
      // A virtio-net NIC on a hub with nothing else on it: eth0 exists, no traffic leaves QEMU, DHCP gets
      // no answer, and no host port is needed (a port picked free can be taken before QEMU binds it).
      ...['-device', 'virtio-net-device,netdev=n0', '-netdev', 'hubport,id=n0,hubid=0'],
    ]);
    const t0 = Date.now();
    try {
      await con.waitFor(/DOZEN-TEST-IMAGE READY\r?\n/, '"DOZEN-TEST-IMAGE READY" marker', BOOT_TIMEOUT_MS);
      const ready = (Date.now() - t0) / 1000;
      const kernel = await con.waitFor(/dozen: kernel (\S+) (\S+) \(/, 'kernel version line', 10_000);
      expect(kernel[1]).toBe(armv7.kernelVersion);
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
      expect(con.text).not.toMatch(/dozen: could not load module/);
      console.log(`test image (armv7 virt): READY after ${ready.toFixed(1)} s, login: after ${login.toFixed(1)} s (QEMU TCG)`);
    } finally {
      qemu.kill('SIGKILL');
      mkdirSync(ARTIFACTS, { recursive: true });
      writeFileSync(join(ARTIFACTS, 'test-image-boot.log'), con.text);
    }
  }, 180_000);

  it('arm64: boots on QEMU virt (cortex-a53), gets a DHCP lease on virtio-net and reaches a root shell', async () => {
    const cmdline = 'console=ttyAMA0,115200 dozen.net=dhcp';
    // User-mode networking (no host port, no tap): QEMU's own DHCP server answers with 10.0.2.15.
    const { qemu, con } = startQemu('qemu-system-aarch64', [
      ...['-M', 'virt', '-cpu', 'cortex-a53', '-m', '512'],
      ...['-kernel', join(OUT, 'arm64/Image'), '-initrd', join(OUT, 'arm64/initrd.img'), '-append', cmdline],
      ...['-device', 'virtio-net-device,netdev=n0', '-netdev', 'user,id=n0'],
    ]);
    const t0 = Date.now();
    try {
      await con.waitFor(/DOZEN-TEST-IMAGE READY\r?\n/, '"DOZEN-TEST-IMAGE READY" marker', BOOT_TIMEOUT_MS);
      const kernel = await con.waitFor(/dozen: kernel (\S+) (\S+) \(/, 'kernel version line', 10_000);
      expect(kernel[1]).toBe(arm64.kernelVersion);
      expect(kernel[2]).toBe('aarch64');
      await con.waitFor(/login: /, '"login:" prompt', 30_000);
      const login = (Date.now() - t0) / 1000;
      await expectLease(con);
      con.send('uname -m; echo DONE-$((6*7))\n');
      const out = await con.waitFor(/([\s\S]*)DONE-42/, 'output of uname -m', 30_000);
      expect(out[1]).toMatch(/^aarch64\r?$/m);
      expect(con.text).not.toMatch(/dozen: could not load module/);
      console.log(`test image (arm64 virt): lease and login: after ${login.toFixed(1)} s (QEMU TCG)`);
    } finally {
      qemu.kill('SIGKILL');
      mkdirSync(ARTIFACTS, { recursive: true });
      writeFileSync(join(ARTIFACTS, 'test-image-boot-arm64.log'), con.text);
    }
  }, 180_000);

  it('armv7: boots on a Banana Pi M2 Ultra (QEMU bpim2u, R40): the GMAC gets a DHCP lease, then login:', async () => {
    // maxcpus=1: with 4 TCG vCPUs loading dwmac-sun8i costs ~50 s of soft-lockup warnings; cntfrq: the
    // R40's 24 MHz counter (QEMU's default 62.5 MHz makes the guest's clock run 2.6 times too fast).
    // A kernel whose dwmac-sun8i oopses on the first interrupt (6.1.0-57-armmp) fails here, loudly.
    const cmdline = 'console=ttyS0,115200 dozen.net=dhcp maxcpus=1';
    const { qemu, con } = startQemu('qemu-system-arm', [
      ...['-M', 'bpim2u', '-m', '1024', '-global', 'driver=cortex-a7-arm-cpu,property=cntfrq,value=24000000'],
      ...['-kernel', join(OUT, 'vmlinuz'), '-initrd', join(OUT, 'initrd.img')],
      ...['-dtb', join(OUT, armv7.dtbs['sun8i-r40-bananapi-m2-ultra.dtb']!), '-append', cmdline],
      ...['-nic', 'user,model=gmac'],
    ]);
    const t0 = Date.now();
    try {
      // login:, or the oops that ends the boot (then fail at once, naming it).
      const first = await con.waitFor(/ login: |Unable to handle kernel|Internal error: Oops|Kernel panic/, '"login:" prompt', R40_TIMEOUT_MS);
      expect(first[0], `the kernel failed on the R40:\n${con.tail()}`).toBe(' login: ');
      expect(con.text).toMatch(/dwmac-sun8i \S+ eth0: Link is Up/);
      expect(con.text).toMatch(/DOZEN-TEST-IMAGE READY/);
      expect(con.text).toMatch(new RegExp(`dozen: kernel ${armv7.kernelVersion} armv7l `));
      await expectLease(con);
      expect(con.text).not.toMatch(/dozen: could not load module/);
      console.log(`test image (Banana Pi M2 Ultra): lease and login: after ${((Date.now() - t0) / 1000).toFixed(1)} s (QEMU TCG)`);
    } finally {
      qemu.kill('SIGKILL');
      mkdirSync(ARTIFACTS, { recursive: true });
      writeFileSync(join(ARTIFACTS, 'test-image-boot-bpim2u.log'), con.text);
    }
  }, 240_000);
});

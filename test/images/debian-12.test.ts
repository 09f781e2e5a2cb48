/**
 * The Debian 12 image (images/debian-12/build.sh), armv7 (Debian armhf, armmp kernel) and arm64 (Debian
 * arm64): built (cold: two debootstraps under qemu-arm / qemu-aarch64, ~9 min each; warm: ~12 s),
 * checked file by file (manifest, checksums, kernels, device trees, each initramfs's iSCSI support and
 * drivers, each root file system), then booted on QEMU:
 *   - the initramfs alone, with user-mode networking and iSCSI arguments naming a target that is not
 *     there: on the Banana Pi M2 Ultra (`bpim2u`, the R40's GMAC: i2c-mv64xxx, axp20x-regulator,
 *     dwmac-sun8i; udev names it end0) and on arm64 `virt` (virtio-net, eth0), the NIC must get QEMU's
 *     DHCP address and iscsistart must try the login;
 *   - the whole system on `virt`, each arch (-kernel/-initrd, root.img as a virtio disk through a
 *     throw-away qcow2 overlay, no iSCSI) to a `login:` prompt. The first-boot unit reads metadata from
 *     a local HTTP server (QEMU user networking with restrict=on: the guest reaches nothing but that
 *     server through guestfwd), phones home, and lets us in over SSH.
 */
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { manifestSchema } from '../../src/images/catalog.js';
import { readDiskLayout } from '../../src/images/disk-layout.js';
import { hashConsolePassword } from '../../src/leases/console-password.js';
import { OutputWatcher } from '../../src/util/wait-for.js';
import { requireRoot, requireTools } from '../helpers/tools.js';
import { type Arch, type ArchEntry, freePort, listFiles, REPO, rootDisks, runImageBuild, sha256File } from './image-files.js';
import { until } from '../helpers/until.js';

const OUT = join(REPO, 'images/debian-12/build');
const ARTIFACTS = join(REPO, 'test-artifacts');
/** systemd on an emulated (TCG) Cortex-A15 / A53: a healthy boot reaches login: in 1-3 minutes. */
const LOGIN_TIMEOUT_MS = 300_000;
/** The initramfs's DHCP: ~25-40 s after power-on on the R40 (dwmac-sun8i loads slowly under TCG). */
const INITRAMFS_NET_TIMEOUT_MS = 180_000;
const ROOT_UUID_RE = /root=UUID=([0-9a-f-]{36})/;

const runBuild = (...args: string[]) => runImageBuild('debian-12', ...args);
const { debugfs, elfMachine } = rootDisks(OUT);

/** The initramfs's file list (a zstd'd newc cpio, as initramfs-tools makes with COMPRESS=zstd). */
const initrdList = (file: string) =>
  execFileSync('sh', ['-c', `zstd -dc "${file}" | cpio -it --quiet`], { encoding: 'utf8', maxBuffer: 64 << 20 }).split('\n').filter(Boolean);
/** One file of the initramfs. */
const initrdFile = (file: string, path: string) =>
  execFileSync('sh', ['-c', `zstd -dc "${file}" | cpio -i --to-stdout --quiet "${path}"`], { maxBuffer: 64 << 20 });

let raw: { arches: Record<Arch, ArchEntry> } & Record<string, unknown>;
let manifest: ReturnType<typeof manifestSchema.parse>;
let firstBuild: { stderr: string; ms: number };
const outputs = ['vmlinuz', 'initrd.img', 'root.img', 'arm64/Image', 'arm64/initrd.img', 'arm64/root.img', 'manifest.json'];

beforeAll(() => {
  requireRoot();
  requireTools('bash', 'debootstrap', 'mke2fs', 'debugfs', 'zstd', 'cpio', 'qemu-system-arm', 'qemu-system-aarch64', 'qemu-img', 'ssh', 'ssh-keygen');
  firstBuild = runBuild();
  console.log(`debian-12: build.sh took ${(firstBuild.ms / 1000).toFixed(1)} s\n${firstBuild.stderr}`);
  raw = JSON.parse(readFileSync(join(OUT, 'manifest.json'), 'utf8')) as typeof raw;
  manifest = manifestSchema.parse(raw);
}, 3_100_000);

describe('Debian 12 image (images/debian-12): armv7 + arm64', () => {
  it('is cached: a second build changes nothing and says so', () => {
    const before = outputs.map((f) => statSync(join(OUT, f)).mtimeMs);
    const again = runBuild();
    expect(again.stderr, firstBuild.stderr).toMatch(/up to date/);
    // How fast is for `npm run bench` (bench/e2e-bounds.ts, target 60 s); here: that nothing was rebuilt.
    console.log(`debian-12: warm build.sh took ${(again.ms / 1000).toFixed(1)} s`);
    expect(outputs.map((f) => statSync(join(OUT, f)).mtimeMs)).toEqual(before);
  }, 120_000);

  it('manifest: both arches, the catalog schema, one shared root=UUID, and checksums of every file', async () => {
    expect(manifest).toMatchObject({ name: 'debian-12', iscsiSyntax: 'debian' });
    // The multi-arch form only: the one-arch top-level fields are gone.
    for (const k of ['arch', 'kernel', 'initrd', 'dtbs', 'rootDisk', 'kernelVersion', 'packages']) expect(raw, k).not.toHaveProperty(k);
    expect(Object.keys(raw.arches).sort()).toEqual(['arm64', 'armv7']);
    expect(Object.keys(manifest.arches).sort()).toEqual(['arm64', 'armv7']);
    expect(manifest.cmdline).toMatch(/^console=\{\{console\}\} root=UUID=[0-9a-f-]{36} ro$/);

    const { armv7, arm64 } = raw.arches;
    expect(armv7).toMatchObject({ kernel: 'vmlinuz', initrd: 'initrd.img', rootDisk: 'root.img', flavour: 'armmp' });
    expect(armv7.dtbs).toEqual({
      'sun7i-a20-bananapi.dtb': 'dtbs/sun7i-a20-bananapi.dtb',
      'sun7i-a20-bananapro.dtb': 'dtbs/sun7i-a20-bananapro.dtb',
      'sun8i-r40-bananapi-m2-ultra.dtb': 'dtbs/sun8i-r40-bananapi-m2-ultra.dtb',
    });
    expect(arm64).toMatchObject({ kernel: 'arm64/Image', initrd: 'arm64/initrd.img', rootDisk: 'arm64/root.img', flavour: 'arm64', dtbs: {} });
    // 6.1.0-50 (6.1.176): its dwmac-sun8i works on the R40; 6.1.0-57 oopses on the GMAC's first interrupt.
    expect(armv7.kernelVersion).toMatch(/^6\.1\.0-\d+-armmp$/);
    expect(arm64.kernelVersion).toMatch(/^6\.1\.0-\d+-arm64$/);
    for (const [a, meta] of [['armv7', 'linux-image-armmp'], ['arm64', 'linux-image-arm64']] as const) {
      const e = raw.arches[a];
      expect(e.packages, a).toMatchObject({ 'openssh-server': expect.any(String), 'open-iscsi': expect.any(String), [meta]: expect.any(String), [`linux-image-${e.kernelVersion}`]: expect.any(String) });
    }

    // sha256 covers exactly the image's files (everything but itself and SHA256SUMS) and matches them.
    const sums = manifest.sha256 ?? {};
    expect(Object.keys(sums).sort()).toEqual(listFiles(OUT).filter((f) => f !== 'manifest.json' && f !== 'SHA256SUMS').sort());
    for (const a of [armv7, arm64]) {
      for (const f of [a.kernel, a.initrd, a.rootDisk, ...Object.values(a.dtbs)]) expect(Object.keys(sums), `sha256 of ${f}`).toContain(f);
    }
    for (const [f, h] of Object.entries(sums)) expect(await sha256File(join(OUT, f)), f).toBe(h);
    const sumsFile = readFileSync(join(OUT, 'SHA256SUMS'), 'utf8').trim().split('\n').map((l) => l.split(/\s+\*?/));
    expect(Object.fromEntries(sumsFile.map(([h, f]) => [f, h]))).toEqual(sums);
  }, 120_000);

  it('kernels: an ARM zImage (bootz) and an uncompressed arm64 Image (booti); the device trees, R40 included', () => {
    expect(readFileSync(join(OUT, 'vmlinuz')).readUInt32LE(0x24)).toBe(0x016f2818); // ARM zImage magic
    const img = readFileSync(join(OUT, 'arm64/Image'));
    expect(img.toString('latin1', 0x38, 0x3c)).toBe('ARM\x64'); // arm64 Image magic
    expect([img[0], img[1]]).not.toEqual([0x1f, 0x8b]); // not gzip'd: booti would refuse it
    expect(img.length).toBeGreaterThan(10_000_000);
    for (const d of Object.values(raw.arches.armv7.dtbs)) expect(readFileSync(join(OUT, d)).readUInt32BE(0), d).toBe(0xd00dfeed);
    const r40 = readFileSync(join(OUT, 'dtbs/sun8i-r40-bananapi-m2-ultra.dtb')).toString('latin1');
    expect(r40).toContain('allwinner,sun8i-r40');
    expect(r40).toContain('allwinner,sun8i-r40-gmac');
  });

  describe.each([
    {
      arch: 'armv7' as const,
      machine: 40, // EM_ARM
      // The A20 and R40 NICs (the R40's GMAC needs its PMIC's regulator, on I2C) and virtio.
      modules: ['virtio_mmio', 'virtio_net', 'virtio_blk', 'dwmac-sunxi', 'realtek', 'i2c-mv64xxx', 'axp20x-regulator', 'dwmac-sun8i', 'stmmac', 'stmmac-platform'],
      listed: ['i2c-mv64xxx', 'axp20x-regulator', 'dwmac-sun8i', 'virtio_net'],
      notModules: [] as string[],
    },
    {
      arch: 'arm64' as const,
      machine: 183, // EM_AARCH64
      modules: ['virtio_mmio', 'virtio_net', 'virtio_blk'],
      listed: ['virtio_mmio', 'virtio_net'],
      notModules: ['dwmac-sun8i', 'dwmac-sunxi'],
    },
  ])('$arch', ({ arch, machine, modules, listed, notModules }) => {
    const entry = () => raw.arches[arch];
    it('initramfs: initramfs-tools with the open-iscsi hook (iscsistart, its local-top script, iscsi_tcp), ipconfig and the board drivers', () => {
      const initrd = join(OUT, entry().initrd);
      const list = initrdList(initrd);
      const has = (re: RegExp) => expect(list.some((p) => re.test(p)), String(re)).toBe(true);
      has(/^(usr\/)?sbin\/iscsistart$/);
      has(/^scripts\/local-top\/iscsi$/);
      has(/^etc\/iscsi\.initramfs$/);
      has(/^etc\/initiatorname\.iscsi$/);
      has(/^(usr\/)?bin\/ipconfig$/); // klibc's DHCP client, which configure_networking uses before the login
      const k = entry().kernelVersion.replace(/\./g, '\\.');
      has(new RegExp(`^(usr/)?lib/modules/${k}/modules\\.dep$`));
      const mod = (m: string) => new RegExp(`^(usr/)?lib/modules/${k}/.*/${m.replace(/[-_]/g, '[-_]')}\\.ko$`);
      for (const m of [...modules, 'iscsi_tcp', 'libiscsi', 'scsi_transport_iscsi', 'sd_mod', 'ext4']) has(mod(m));
      for (const m of notModules) expect(list.some((p) => mod(m).test(p)), `${m} is not for ${arch}`).toBe(false);
      // The list init loads (load_modules) before local-top brings up the network.
      const load = initrdFile(initrd, 'conf/modules').toString();
      for (const m of listed) expect(load, `conf/modules of the ${arch} initramfs`).toMatch(new RegExp(`^${m}\\b`, 'm'));
      // iscsistart is a binary of this architecture.
      const iscsistart = list.find((p) => /^(usr\/)?sbin\/iscsistart$/.test(p))!;
      expect(initrdFile(initrd, iscsistart).readUInt16LE(18)).toBe(machine);
    });

    it('root disk: a raw ext4 file system (no partition table) with openssh-server, our units enabled, this arch, no per-board identity', async () => {
      const disk = entry().rootDisk;
      const size = statSync(join(OUT, disk)).size;
      expect(size).toBe(1536 * 2 ** 20);
      const layout = await readDiskLayout(join(OUT, disk));
      expect(layout).toMatchObject({ table: 'none', fs: { type: 'ext4', label: 'dozen-root' } });
      const uuid = layout!.table === 'none' ? layout!.fs.uuid : '?';
      expect(ROOT_UUID_RE.exec(manifest.cmdline)?.[1]).toBe(uuid); // the one cmdline serves both arches
      expect(statSync(join(OUT, disk)).blocks * 512).toBeLessThan(size); // sparse

      const status = debugfs(disk, 'cat /var/lib/dpkg/status');
      for (const p of ['openssh-server', 'open-iscsi', 'initramfs-tools', 'systemd-sysv', 'curl', `linux-image-${entry().kernelVersion}`]) {
        expect(status, p).toMatch(new RegExp(`^Package: ${p}\\n(?:[^\\n]+\\n)*?Status: install ok installed$`, 'm'));
      }
      expect(elfMachine(disk, '/usr/sbin/sshd')).toBe(machine);
      expect(debugfs(disk, 'cat /etc/dozen-release')).toMatch(new RegExp(`^ARCH=${arch}$`, 'm'));
      expect(debugfs(disk, 'stat /usr/local/sbin/dozen-firstboot')).toMatch(/Mode:\s+0755/);
      // Enabled = the [Install] symlinks exist.
      expect(debugfs(disk, 'ls -l /etc/systemd/system/multi-user.target.wants')).toMatch(/dozen-firstboot\.service/);
      expect(debugfs(disk, 'ls -l /etc/systemd/system/multi-user.target.wants')).toMatch(/systemd-networkd\.service/);
      expect(debugfs(disk, 'cat /etc/systemd/network/20-dozen-wired.network')).toMatch(/Name=en\* eth\*/);
      expect(debugfs(disk, 'cat /etc/fstab')).toMatch(new RegExp(`^UUID=${uuid}\\s+/\\s+ext4`, 'm'));
      expect(debugfs(disk, 'ls /etc/ssh')).not.toMatch(/ssh_host_/); // made per disk at first boot
      expect(debugfs(disk, 'stat /etc/machine-id')).toMatch(/Size: 0\b/);
      expect(debugfs(disk, 'cat /etc/iscsi/iscsi.initramfs')).toMatch(/iscsi_target_name=/);
      // The module list the initramfs was built from, for the tenant's own update-initramfs.
      const mods = debugfs(disk, 'cat /etc/initramfs-tools/modules');
      for (const m of listed) expect(mods).toMatch(new RegExp(`^${m}$`, 'm'));
    }, 60_000);
  });

  /**
   * The initramfs alone, root on iSCSI: QEMU's user-mode network answers DHCP (10.0.2.15) and has no
   * iSCSI target at 10.0.2.2, so the login fails; what counts is that eth0 came up in the initramfs and
   * iscsistart tried.
   */
  describe.each([
    {
      name: 'Banana Pi M2 Ultra (QEMU bpim2u, R40 GMAC)',
      arch: 'armv7' as const,
      log: 'debian-12-initramfs-bpim2u.log',
      qemu: (e: ArchEntry, iscsi: string) => [
        'qemu-system-arm',
        // maxcpus=1: with 4 TCG vCPUs loading dwmac-sun8i costs ~50 s of soft-lockup warnings; cntfrq: the
        // R40's 24 MHz counter. A kernel whose dwmac-sun8i oopses on the first interrupt (6.1.0-57) fails here.
        ...['-M', 'bpim2u', '-m', '1024', '-global', 'driver=cortex-a7-arm-cpu,property=cntfrq,value=24000000'],
        ...['-kernel', join(OUT, e.kernel), '-initrd', join(OUT, e.initrd), '-dtb', join(OUT, e.dtbs['sun8i-r40-bananapi-m2-ultra.dtb']!)],
        ...['-append', `console=ttyS0,115200 maxcpus=1 ip=dhcp ${iscsi} root=/dev/sda`, '-nic', 'user,model=gmac'],
      ],
    },
    {
      name: 'arm64 QEMU virt (cortex-a53, virtio-net)',
      arch: 'arm64' as const,
      log: 'debian-12-initramfs-arm64.log',
      qemu: (e: ArchEntry, iscsi: string) => [
        'qemu-system-aarch64',
        ...['-M', 'virt', '-cpu', 'cortex-a53', '-m', '1024'],
        ...['-kernel', join(OUT, e.kernel), '-initrd', join(OUT, e.initrd)],
        ...['-append', `console=ttyAMA0 ip=dhcp ${iscsi} root=/dev/sda`, '-netdev', 'user,id=n0', '-device', 'virtio-net-device,netdev=n0'],
      ],
    },
  ])('initramfs on $name: DHCP on eth0, then the iSCSI login', ({ arch, log, qemu: cmd }) => {
    it('brings eth0 up with QEMU’s DHCP address and runs iscsistart against the target', async () => {
      const [bin, ...args] = cmd(raw.arches[arch], 'iscsi_target_ip=10.0.2.2 iscsi_target_name=iqn.2026-12.test:none iscsi_initiator=iqn.2026-12.test:board');
      const q = spawn(bin!, [...['-nographic', '-monitor', 'none'], ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      let text = '';
      q.stdout!.on('data', (d) => (text += d));
      q.stderr!.on('data', (d) => (text += d));
      const out = new OutputWatcher(q.stdout!, 4 << 20);
      const exited = new Promise<never>((_, rej) => q.once('exit', (c, s) => rej(new Error(`QEMU exited (code ${c}, signal ${s}); console:\n${text.slice(-3000)}`))));
      exited.catch(() => {});
      const wait = (re: RegExp, ms: number, what: string) => Promise.race([out.waitFor(re, ms, `${what} — ${arch} initramfs; full log in test-artifacts/${log}`), exited]);
      const t0 = Date.now();
      try {
        // The lease, or the oops that ends the boot (then fail at once, naming it).
        // eth0, or end0 where udev names it after the device tree's ethernet0 alias (Debian 12 on the R40).
        const first = await wait(/IP-Config: e(?:th|nd)0 complete|Unable to handle kernel|Internal error: Oops|Kernel panic/, INITRAMFS_NET_TIMEOUT_MS, 'the initramfs DHCP on eth0');
        expect(first[0], `the kernel failed:\n${text.slice(-3000)}`).toMatch(/^IP-Config: e(th|nd)0 complete$/);
        await wait(/address: 10\.0\.2\.15\b/, 10_000, 'the DHCP address 10.0.2.15');
        const lease = (Date.now() - t0) / 1000;
        await wait(/iscsistart: Logging into iqn\.2026-12\.test:none 10\.0\.2\.2:3260/, 120_000, 'the iSCSI login attempt');
        expect(text).not.toMatch(/Unable to handle kernel|Oops/);
        console.log(`debian-12 (${arch} initramfs): eth0 10.0.2.15 after ${lease.toFixed(1)} s, iscsistart after ${((Date.now() - t0) / 1000).toFixed(1)} s\n${text.split('\n').filter((l) => /IP-Config|address:|iscsistart|dwmac|Link is Up/.test(l)).join('\n')}`);
      } finally {
        q.kill('SIGKILL');
        mkdirSync(ARTIFACTS, { recursive: true });
        writeFileSync(join(ARTIFACTS, log), text);
      }
    }, INITRAMFS_NET_TIMEOUT_MS + 180_000);
  });

  describe.each([
    // armv7's metadata carries a console password (as its hash, the way the server sends it); arm64's none.
    { arch: 'armv7' as const, bin: 'qemu-system-arm', cpu: 'cortex-a15', uname: 'armv7l', log: 'debian-12-boot.log', password: `pw-${randomBytes(6).toString('hex')}` },
    { arch: 'arm64' as const, bin: 'qemu-system-aarch64', cpu: 'cortex-a53', uname: 'aarch64', log: 'debian-12-boot-arm64.log', password: undefined },
  ])('$arch boots on QEMU virt (direct kernel, root disk as a virtio disk, no iSCSI)', ({ arch, bin, cpu, uname, log, password }) => {
    let work: string;
    let qemu: ChildProcess;
    let out: OutputWatcher;
    let firstboot: OutputWatcher; // a second reader of the same console: login: and the unit's lines come in either order
    let meta: Server;
    let sshPort: number;
    const phoneHome: Array<Record<string, string>> = [];
    let exited: Promise<never>;
    let consoleLog = ''; // everything, for test-artifacts (the watchers drop what they have matched)
    let t0 = 0;

    beforeAll(async () => {
      const e = raw.arches[arch];
      work = mkdtempSync(join(tmpdir(), `debian-12-boot-${arch}-`));
      execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'tenant@test', '-f', join(work, 'id')]);
      const pub = readFileSync(join(work, 'id.pub'), 'utf8').trim();
      // The metadata service's layout (src/leases/metadata.ts): keys as JSON-quoted YAML list items, the
      // console password as cloud-init's chpasswd users entry with the hash the server keeps.
      const hash = password && (await hashConsolePassword(password));
      const chpasswd = hash ? `chpasswd:\n  expire: false\n  users:\n    - name: root\n      type: hash\n      password: ${JSON.stringify(hash)}\n` : '';
      meta = createServer((req, res) => {
        if (req.method === 'GET' && req.url === '/m/i-test/meta-data') return void res.end('instance-id: i-test\nlocal-hostname: deb-test\n');
        if (req.method === 'GET' && req.url === '/m/i-test/user-data') return void res.end(`#cloud-config\nhostname: deb-test\nssh_authorized_keys:\n  - ${JSON.stringify(pub)}\n${chpasswd}`);
        if (req.method === 'POST' && req.url === '/m/i-test/phone-home') {
          let body = '';
          req.on('data', (d) => (body += d));
          req.on('end', () => {
            phoneHome.push(Object.fromEntries(new URLSearchParams(body)));
            res.end('ok\n');
          });
          return;
        }
        res.statusCode = 404;
        res.end('not found\n');
      });
      await new Promise<void>((r) => meta.listen(0, '127.0.0.1', r));
      const metaPort = (meta.address() as AddressInfo).port;
      sshPort = await freePort();
      // The built root disk stays pristine (its checksum is in the manifest): the guest writes to an overlay.
      const disk = join(work, 'root.qcow2');
      // 2 GiB, more than root.img's 1.5: dozen-firstboot must grow the file system to the disk.
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', join(OUT, e.rootDisk), '-F', 'raw', disk, '2G']);
      const url = 'http://10.0.2.100/m/i-test/';
      const cmdline = `${manifest.cmdline.replace('{{console}}', 'ttyAMA0,115200')} ds=nocloud-net;s=${url} dozen.phonehome=${url}phone-home`;
      t0 = Date.now();
      qemu = spawn(
        bin,
        [
          ...['-M', 'virt', '-cpu', cpu, '-smp', '2', '-m', '1024', '-nodefaults', '-display', 'none', '-monitor', 'none', '-serial', 'stdio'],
          ...['-kernel', join(OUT, e.kernel), '-initrd', join(OUT, e.initrd), '-append', cmdline],
          ...['-drive', `file=${disk},if=none,format=qcow2,id=hd0`, '-device', 'virtio-blk-device,drive=hd0'],
          // restrict=on: no way out of the guest except the metadata server (guestfwd) and our SSH (hostfwd).
          ...['-netdev', `user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:80-tcp:127.0.0.1:${metaPort},hostfwd=tcp:127.0.0.1:${sshPort}-:22`],
          ...['-device', 'virtio-net-device,netdev=n0'],
        ],
        { stdio: ['pipe', 'pipe', 'pipe'] },
      );
      qemu.stdout!.on('data', (d) => (consoleLog += d));
      out = new OutputWatcher(qemu.stdout!, 4 << 20);
      firstboot = new OutputWatcher(qemu.stdout!, 4 << 20);
      let stderr = '';
      qemu.stderr!.on('data', (d) => (stderr += d));
      exited = new Promise((_, rej) =>
        qemu.once('exit', (code, sig) => rej(new Error(`QEMU exited (code ${code}, signal ${sig}): ${stderr.trim()}; console:\n${consoleLog.slice(-3000)}`))),
      );
      exited.catch(() => {});
    });

    afterAll(async () => {
      qemu?.kill('SIGKILL');
      meta?.close();
      mkdirSync(ARTIFACTS, { recursive: true });
      writeFileSync(join(ARTIFACTS, log), consoleLog);
      if (work) rmSync(work, { recursive: true, force: true });
    });

    const wait = (w: OutputWatcher, re: RegExp | string, ms: number, what: string) =>
      Promise.race([w.waitFor(re, ms, `${what} — debian-12 ${arch} on QEMU virt (TCG emulation), serial console ttyAMA0; full log in test-artifacts/${log}`), exited]);

    it(
      'reaches a login: prompt on the serial console, with the first-boot unit done',
      async () => {
        await wait(out, /Linux version 6\.1/, 60_000, 'kernel banner');
        await wait(out, /login: /, LOGIN_TIMEOUT_MS, '"login:" prompt');
        const login = (Date.now() - t0) / 1000;
        await wait(firstboot, /dozen-firstboot: new instance i-test/, LOGIN_TIMEOUT_MS, 'first-boot unit reading the metadata');
        await wait(firstboot, /dozen-firstboot: (phoned home|could not phone home)[^\n]*/, 120_000, 'first-boot unit phoning home');
        console.log(`debian-12 ${arch}: login: after ${login.toFixed(1)} s, phone-home after ${((Date.now() - t0) / 1000).toFixed(1)} s (QEMU TCG, direct kernel)`);
      },
      LOGIN_TIMEOUT_MS * 2,
    );

    it('phoned home with its instance, hostname and this disk’s own SSH host key', async () => {
      // The console said it phoned home; the POST may still be in flight: poll for it (60 s at most).
      await until('the phone-home POST', () => phoneHome.length > 0, { timeoutMs: 60_000, intervalMs: 100 });
      expect(phoneHome).toHaveLength(1);
      expect(phoneHome[0]).toMatchObject({ instance_id: 'i-test', hostname: 'deb-test', pub_key_ed25519: expect.stringMatching(/^ssh-ed25519 AAAA/) });
    }, 90_000);

    it('lets the tenant in over SSH with the key from user-data: hostname set, units active, root grown to its disk', async () => {
      const ssh = (cmd: string) =>
        spawnSync(
          'ssh',
          ['-i', join(work, 'id'), '-p', String(sshPort), '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no', '-o', `UserKnownHostsFile=${join(work, 'known_hosts')}`, '-o', 'ConnectTimeout=20', 'root@127.0.0.1', cmd],
          { encoding: 'utf8', timeout: 60_000 },
        );
      // sshd starts right after the first-boot unit: wait for it to let us in (poll, 120 s at most).
      let refused = '';
      let r = await until('sshd letting the tenant in', () => {
        const tried = ssh('true');
        refused = tried.stderr;
        return tried.status === 0 ? tried : undefined;
      }, { timeoutMs: 120_000, intervalMs: 500, detail: () => `last ssh: ${refused.trim()}` });
      expect(r.status, r.stderr).toBe(0);
      r = ssh('hostname; systemctl is-active dozen-firstboot ssh systemd-networkd; cat /etc/dozen-release; uname -m; cat /root/.ssh/authorized_keys; echo size=$(df -B1 --output=size / | tail -1); echo failed=$(systemctl --failed --no-legend --plain | tr -s " " | cut -d" " -f1 | paste -sd,); echo nics=$(ls /sys/class/net | paste -sd,)');
      expect(r.status, r.stderr).toBe(0);
      const lines = r.stdout.trim().split('\n');
      expect(lines.slice(0, 4)).toEqual(['deb-test', 'active', 'active', 'active']);
      expect(r.stdout).toMatch(/^DOZEN_IMAGE=debian-12$/m);
      expect(r.stdout).toMatch(new RegExp(`^ARCH=${arch}$`, 'm'));
      expect(r.stdout).toMatch(new RegExp(`^${uname}$`, 'm'));
      expect(r.stdout).toContain(readFileSync(join(work, 'id.pub'), 'utf8').trim());
      expect(Number(/^size=(\d+)$/m.exec(r.stdout)?.[1])).toBeGreaterThan(1.8e9); // grown from 1.5 GiB to the 2 GiB disk
      expect(r.stdout).toMatch(/^failed=$/m); // no failed units
      expect(r.stdout).toMatch(/^nics=eth0,lo$/m);
      // The host key we were shown is the one it phoned home.
      const known = readFileSync(join(work, 'known_hosts'), 'utf8');
      expect(known).toContain(phoneHome[0]!.pub_key_ed25519!.split(' ')[1]!);
    }, 180_000);

    it(password ? 'takes a root login on the serial console with the lease’s console password' : 'without a console password, the console’s login banner says how to set one', async () => {
      if (!password) {
        expect(consoleLog).toContain('root has no console password on this board');
        expect(consoleLog).not.toMatch(/set root's console password/);
        return;
      }
      // The first test waited on `firstboot` past this line (it comes before the phone-home).
      expect(consoleLog).toContain("dozen-firstboot: set root's console password");
      const con = new OutputWatcher(qemu.stdout!, 1 << 20);
      qemu.stdin!.write('\n');
      await wait(con, /login: /, 60_000, 'a fresh login prompt');
      qemu.stdin!.write('root\n');
      await wait(con, 'Password:', 30_000, 'the password prompt');
      qemu.stdin!.write(`${password}\n`);
      await wait(con, /root@deb-test:~# /, 60_000, 'a root shell after the console password');
      qemu.stdin!.write('echo "uid=$(id -u) banner=$(ls /etc/issue.d | paste -sd,)"\n');
      await wait(con, /uid=0 banner=\r?\n/, 30_000, 'root, and the no-password banner gone');
    }, 180_000);
  });
});

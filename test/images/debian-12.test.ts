/**
 * The Debian 12 armhf image (images/debian-12/build.sh): built (cold: debootstrap under qemu-arm,
 * ~10-15 min; warm: seconds), checked file by file (manifest, checksums, the initramfs's iSCSI
 * support, the root file system), and booted directly on QEMU `virt` (-kernel/-initrd, root.img as
 * a virtio disk through a throw-away qcow2 overlay, no iSCSI) to a `login:` prompt. The first-boot
 * unit reads metadata from a local HTTP server (QEMU user networking with restrict=on: the guest
 * reaches nothing but that server through guestfwd), phones home, and lets us in over SSH.
 */
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, mkdirSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createServer as netServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { manifestSchema } from '../../src/images/catalog.js';
import { readDiskLayout } from '../../src/images/disk-layout.js';
import { OutputWatcher } from '../../src/util/wait-for.js';
import { requireRoot, requireTools } from '../helpers/tools.js';
import { until } from '../helpers/until.js';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const BUILD_SH = join(REPO, 'images/debian-12/build.sh');
const OUT = join(REPO, 'images/debian-12/build');
const ARTIFACTS = join(REPO, 'test-artifacts');
/** systemd on an emulated (TCG) Cortex-A15: a healthy boot reaches login: in 1-2 minutes. */
const LOGIN_TIMEOUT_MS = 300_000;

function runBuild(...args: string[]): { stderr: string; ms: number } {
  const t0 = Date.now();
  const r = spawnSync('bash', [BUILD_SH, ...args], { encoding: 'utf8', timeout: 1_500_000 });
  if (r.status !== 0) throw new Error(`images/debian-12/build.sh ${args.join(' ')} failed (status ${r.status}, signal ${r.signal}):\n${r.stderr}${r.stdout}`);
  return { stderr: r.stderr, ms: Date.now() - t0 };
}

const sha256File = (file: string) =>
  new Promise<string>((res, rej) => {
    const h = createHash('sha256');
    createReadStream(file).on('data', (d) => h.update(d)).on('end', () => res(h.digest('hex'))).on('error', rej);
  });

/** A file's details inside root.img, read with debugfs (no mount). */
function debugfs(request: string): string {
  return execFileSync('debugfs', ['-R', request, join(OUT, 'root.img')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], maxBuffer: 64 << 20 });
}

const freePort = () =>
  new Promise<number>((res, rej) => {
    const s = netServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as AddressInfo).port;
      s.close(() => res(port));
    });
  });

let manifest: ReturnType<typeof manifestSchema.parse> & { kernelVersion?: string; packages?: Record<string, string> };
let firstBuild: { stderr: string; ms: number };

beforeAll(() => {
  requireRoot();
  requireTools('bash', 'debootstrap', 'mke2fs', 'debugfs', 'zstd', 'cpio', 'qemu-system-arm', 'qemu-img', 'ssh', 'ssh-keygen');
  firstBuild = runBuild();
  console.log(`debian-12: build.sh took ${(firstBuild.ms / 1000).toFixed(1)} s\n${firstBuild.stderr}`);
  const raw = JSON.parse(readFileSync(join(OUT, 'manifest.json'), 'utf8'));
  manifest = { ...raw, ...manifestSchema.parse(raw) };
}, 1_600_000);

describe('Debian 12 image (images/debian-12)', () => {
  it('is cached: a second build changes nothing and says so', () => {
    const before = ['vmlinuz', 'initrd.img', 'root.img', 'manifest.json'].map((f) => statSync(join(OUT, f)).mtimeMs);
    const again = runBuild();
    expect(again.stderr, firstBuild.stderr).toMatch(/up to date/);
    // How fast is for `npm run bench` (bench/e2e-bounds.ts, target 60 s); here: that nothing was rebuilt.
    console.log(`debian-12: warm build.sh took ${(again.ms / 1000).toFixed(1)} s`);
    expect(['vmlinuz', 'initrd.img', 'root.img', 'manifest.json'].map((f) => statSync(join(OUT, f)).mtimeMs)).toEqual(before);
  }, 120_000);

  it('manifest: catalog schema, iSCSI syntax, root disk, device trees, and checksums that match', async () => {
    expect(manifest).toMatchObject({ name: 'debian-12', arches: { armv7: { kernel: 'vmlinuz', initrd: 'initrd.img', rootDisk: 'root.img' } }, iscsiSyntax: 'debian' });
    const a = manifest.arches.armv7!;
    expect(manifest.cmdline).toMatch(/^console=\{\{console\}\} root=UUID=[0-9a-f-]{36} ro$/);
    expect(a.dtbs).toMatchObject({ bananapi: 'dtbs/sun7i-a20-bananapi.dtb', bananapro: 'dtbs/sun7i-a20-bananapro.dtb' });
    expect(manifest.kernelVersion).toMatch(/^6\.1\.0-\d+-armmp$/);
    expect(manifest.packages).toMatchObject({ 'openssh-server': expect.any(String), 'open-iscsi': expect.any(String), [`linux-image-${manifest.kernelVersion}`]: expect.any(String) });
    const files = [a.kernel, a.initrd!, a.rootDisk!, ...Object.values(a.dtbs)];
    expect(Object.keys(manifest.sha256 ?? {}).sort()).toEqual(files.sort());
    for (const [f, h] of Object.entries(manifest.sha256!)) expect(await sha256File(join(OUT, f)), f).toBe(h);
    expect(readFileSync(join(OUT, 'vmlinuz')).readUInt32LE(0x24)).toBe(0x016f2818); // ARM zImage, for bootz
    for (const d of Object.values(a.dtbs)) expect(readFileSync(join(OUT, d)).readUInt32BE(0)).toBe(0xd00dfeed);
  }, 60_000);

  it('initramfs: initramfs-tools with the open-iscsi hook (iscsistart, its local-top script, iscsi_tcp) and the board drivers', () => {
    const list = execFileSync('sh', ['-c', `zstd -dc "${join(OUT, 'initrd.img')}" | cpio -it --quiet`], { encoding: 'utf8', maxBuffer: 64 << 20 }).split('\n');
    const has = (re: RegExp) => expect(list.some((p) => re.test(p)), String(re)).toBe(true);
    has(/^(usr\/)?sbin\/iscsistart$/);
    has(/^scripts\/local-top\/iscsi$/);
    has(/^etc\/iscsi\.initramfs$/);
    has(/^etc\/initiatorname\.iscsi$/);
    for (const m of ['iscsi_tcp', 'libiscsi', 'scsi_transport_iscsi', 'sd_mod', 'virtio_blk', 'virtio_net', 'virtio_mmio', 'dwmac-sunxi', 'ext4']) has(new RegExp(`/${m}\\.ko$`));
    has(/^(usr\/)?bin\/ipconfig$/); // klibc's DHCP client, which configure_networking uses before the login
    const k = manifest.kernelVersion!;
    has(new RegExp(`^(usr/)?lib/modules/${k.replace(/\./g, '\\.')}/modules\\.dep$`));
  });

  it('root.img: a raw ext4 file system (no partition table) with openssh-server, our units enabled and no per-board identity', async () => {
    const size = statSync(join(OUT, 'root.img')).size;
    expect(size).toBe(1536 * 2 ** 20);
    const layout = await readDiskLayout(join(OUT, 'root.img'));
    expect(layout).toMatchObject({ table: 'none', fs: { type: 'ext4', label: 'dozen-root' } });
    expect(manifest.cmdline).toContain(`root=UUID=${layout!.table === 'none' ? layout!.fs.uuid : '?'}`);
    expect(statSync(join(OUT, 'root.img')).blocks * 512).toBeLessThan(size); // sparse

    const status = debugfs('cat /var/lib/dpkg/status');
    for (const p of ['openssh-server', 'open-iscsi', 'initramfs-tools', 'systemd-sysv', 'curl', `linux-image-${manifest.kernelVersion}`]) {
      expect(status, p).toMatch(new RegExp(`^Package: ${p}\\n(?:[^\\n]+\\n)*?Status: install ok installed$`, 'm'));
    }
    expect(debugfs('stat /usr/sbin/sshd')).toMatch(/Type: regular/);
    expect(debugfs('stat /usr/local/sbin/dozen-firstboot')).toMatch(/Mode:\s+0755/);
    // Enabled = the [Install] symlinks exist.
    expect(debugfs('ls -l /etc/systemd/system/multi-user.target.wants')).toMatch(/dozen-firstboot\.service/);
    expect(debugfs('ls -l /etc/systemd/system/multi-user.target.wants')).toMatch(/systemd-networkd\.service/);
    expect(debugfs('cat /etc/systemd/network/20-dozen-wired.network')).toMatch(/Name=en\* eth\*/);
    expect(debugfs('cat /etc/fstab')).toMatch(new RegExp(`^UUID=${layout!.table === 'none' ? layout!.fs.uuid : ''}\\s+/\\s+ext4`, 'm'));
    expect(debugfs('ls /etc/ssh')).not.toMatch(/ssh_host_/); // made per disk at first boot
    expect(debugfs('stat /etc/machine-id')).toMatch(/Size: 0\b/);
    expect(debugfs('cat /etc/iscsi/iscsi.initramfs')).toMatch(/iscsi_target_name=/);
  });

  describe('boots on QEMU virt (direct kernel, root.img as a virtio disk, no iSCSI)', () => {
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
      work = mkdtempSync(join(tmpdir(), 'debian-12-boot-'));
      execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'tenant@test', '-f', join(work, 'id')]);
      const pub = readFileSync(join(work, 'id.pub'), 'utf8').trim();
      // The metadata service's layout (src/leases/metadata.ts): keys as JSON-quoted YAML list items.
      meta = createServer((req, res) => {
        if (req.method === 'GET' && req.url === '/m/i-test/meta-data') return void res.end('instance-id: i-test\nlocal-hostname: deb-test\n');
        if (req.method === 'GET' && req.url === '/m/i-test/user-data') return void res.end(`#cloud-config\nhostname: deb-test\nssh_authorized_keys:\n  - ${JSON.stringify(pub)}\n`);
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
      // The built root.img stays pristine (its checksum is in the manifest): the guest writes to an overlay.
      const disk = join(work, 'root.qcow2');
      // 2 GiB, more than root.img's 1.5: dozen-firstboot must grow the file system to the disk.
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', join(OUT, 'root.img'), '-F', 'raw', disk, '2G']);
      const url = 'http://10.0.2.100/m/i-test/';
      const cmdline = `${manifest.cmdline.replace('{{console}}', 'ttyAMA0,115200')} ds=nocloud-net;s=${url} dozen.phonehome=${url}phone-home`;
      t0 = Date.now();
      qemu = spawn(
        'qemu-system-arm',
        [
          ...['-M', 'virt', '-cpu', 'cortex-a15', '-smp', '2', '-m', '1024', '-nodefaults', '-display', 'none', '-monitor', 'none', '-serial', 'stdio'],
          ...['-kernel', join(OUT, 'vmlinuz'), '-initrd', join(OUT, 'initrd.img'), '-append', cmdline],
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
      writeFileSync(join(ARTIFACTS, 'debian-12-boot.log'), consoleLog);
    });

    const wait = (w: OutputWatcher, re: RegExp | string, ms: number, what: string) =>
      Promise.race([w.waitFor(re, ms, `${what} — debian-12 on QEMU virt (TCG emulation), serial console ttyAMA0; full log in test-artifacts/debian-12-boot.log`), exited]);

    it(
      'reaches a login: prompt on the serial console, with the first-boot unit done',
      async () => {
        await wait(out, /Linux version 6\.1/, 60_000, 'kernel banner');
        await wait(out, /login: /, LOGIN_TIMEOUT_MS, '"login:" prompt');
        const login = (Date.now() - t0) / 1000;
        await wait(firstboot, /dozen-firstboot: new instance i-test/, LOGIN_TIMEOUT_MS, 'first-boot unit reading the metadata');
        await wait(firstboot, /dozen-firstboot: (phoned home|could not phone home)[^\n]*/, 120_000, 'first-boot unit phoning home');
        console.log(`debian-12: login: after ${login.toFixed(1)} s, phone-home after ${((Date.now() - t0) / 1000).toFixed(1)} s (QEMU TCG, direct kernel)`);
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
      expect(r.stdout).toMatch(/^armv7l$/m);
      expect(r.stdout).toContain(readFileSync(join(work, 'id.pub'), 'utf8').trim());
      expect(Number(/^size=(\d+)$/m.exec(r.stdout)?.[1])).toBeGreaterThan(1.8e9); // grown from 1.5 GiB to the 2 GiB disk
      expect(r.stdout).toMatch(/^failed=$/m); // no failed units
      expect(r.stdout).toMatch(/^nics=eth0,lo$/m);
      // The host key we were shown is the one it phoned home.
      const known = readFileSync(join(work, 'known_hosts'), 'utf8');
      expect(known).toContain(phoneHome[0]!.pub_key_ed25519!.split(' ')[1]!);
    }, 180_000);
  });
});

/**
 * The docker-host image (images/docker-host/build.sh): images/debian-12 + Docker for shared boards
 * (docs/shared-boards.md). Built (layered on debian-12's built image; cold ~3 min, warm: "up to date"),
 * checked file by file (manifest, checksums, the same kernels as debian-12, each root disk's packages,
 * units and daemon.json), then booted on QEMU `virt` the way debian-12's test does (-kernel/-initrd,
 * root.img through a throw-away qcow2 overlay, metadata from a local HTTP server through guestfwd,
 * user networking with restrict=on), plus a second, blank 2 GiB virtio disk for Docker's data-root.
 * The metadata carries engine TLS material made here (a throw-away EC P-256 CA); the guest's 2376 is
 * forwarded to a host port and the engine is checked over TLS with dockerode: /_ping, `docker info`
 * (btrfs, cgroup v2, user namespaces), clients of another CA and plain HTTP refused, and (armv7) a
 * container with a disk quota and a memory limit, read back from the board.
 */
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { closeSync, createReadStream, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { manifestSchema } from '../../src/images/catalog.js';
import { readDiskLayout } from '../../src/images/disk-layout.js';
import { OutputWatcher } from '../../src/util/wait-for.js';
import { requireRoot, requireTools } from '../helpers/tools.js';
import { until } from '../helpers/until.js';
import { type Arch, type ArchEntry, freePort, listFiles, REPO, rootDisks, runImageBuild, sha256File } from './image-files.js';

const OUT = join(REPO, 'images/docker-host/build');
const BASE_OUT = join(REPO, 'images/debian-12/build');
const CONTAINER_TAR = join(REPO, 'images/container-armhf/build/rootfs.tar');
const ARTIFACTS = join(REPO, 'test-artifacts');
/** systemd on an emulated (TCG) Cortex-A15 / A53: login: in 1-3 minutes (debian-12's test). */
const LOGIN_TIMEOUT_MS = 300_000;
/** After login:, dockerd (its first start: userns-remap set-up, btrfs, iptables) under TCG. */
const PING_TIMEOUT_MS = 300_000;
const ROOT_UUID_RE = /root=UUID=([0-9a-f-]{36})/;
/** Where QEMU's user network puts the guest: the address the server certificate names besides 127.0.0.1. */
const GUEST_IP = '10.0.2.15';

const runBuild = (...args: string[]) => runImageBuild('docker-host', ...args);
const { debugfs, elfMachine } = rootDisks(OUT);

/** The names in a directory of a root disk (debugfs `ls -p`: /inode/mode/uid/gid/name/size/). */
const entries = (disk: string, dir: string) =>
  debugfs(disk, `ls -p ${dir}`).split('\n').filter((l) => l.startsWith('/')).map((l) => l.split('/')[5]).sort();

/** An EC P-256 CA in `dir` (ca.pem, ca-key.pem) and, signed by it, the certificates `certs` asks for. */
function makeCa(dir: string, cn: string, certs: Array<{ name: string; cn: string; ext: string }>): void {
  mkdirSync(dir, { recursive: true });
  const ossl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  ossl('req', '-x509', ...ec, '-days', '2', '-subj', `/CN=${cn}`, '-keyout', 'ca-key.pem', '-out', 'ca.pem');
  for (const c of certs) {
    ossl('req', ...ec, '-subj', `/CN=${c.cn}`, '-keyout', `${c.name}-key.pem`, '-out', `${c.name}.csr`);
    writeFileSync(join(dir, `${c.name}.ext`), c.ext);
    ossl('x509', '-req', '-in', `${c.name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca-key.pem', '-CAcreateserial', '-days', '2', '-extfile', `${c.name}.ext`, '-out', `${c.name}.pem`);
  }
}

/** Whatever the TCP port answers to a plain-HTTP request (until it closes, 10 s at most). */
function plainHttp(port: number): Promise<string> {
  return new Promise((res) => {
    let got = '';
    const s = connect(port, '127.0.0.1', () => s.write('GET /_ping HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n'));
    s.setTimeout(10_000, () => s.destroy());
    s.on('data', (d) => (got += d.toString('latin1')));
    s.on('error', () => {});
    s.on('close', () => res(got));
  });
}

let raw: { arches: Record<Arch, ArchEntry> } & Record<string, unknown>;
let manifest: ReturnType<typeof manifestSchema.parse>;
let firstBuild: { stderr: string; ms: number };
const outputs = ['vmlinuz', 'initrd.img', 'root.img', 'arm64/Image', 'arm64/initrd.img', 'arm64/root.img', 'manifest.json'];

beforeAll(() => {
  requireRoot();
  requireTools('bash', 'mke2fs', 'debugfs', 'losetup', 'zstd', 'qemu-system-arm', 'qemu-system-aarch64', 'qemu-img', 'ssh', 'ssh-keygen', 'openssl');
  firstBuild = runBuild();
  console.log(`docker-host: build.sh took ${(firstBuild.ms / 1000).toFixed(1)} s\n${firstBuild.stderr}`);
  raw = JSON.parse(readFileSync(join(OUT, 'manifest.json'), 'utf8')) as typeof raw;
  manifest = manifestSchema.parse(raw);
}, 3_100_000);

describe('docker-host image (images/docker-host): debian-12 + Docker, armv7 + arm64', () => {
  it('is cached: a second build changes nothing and says so', () => {
    const before = outputs.map((f) => statSync(join(OUT, f)).mtimeMs);
    const again = runBuild();
    expect(again.stderr, firstBuild.stderr).toMatch(/\[docker-host\].*up to date/);
    console.log(`docker-host: warm build.sh took ${(again.ms / 1000).toFixed(1)} s`);
    expect(outputs.map((f) => statSync(join(OUT, f)).mtimeMs)).toEqual(before);
  }, 180_000);

  it('manifest: both arches, its own root=UUID, no cgroup flags, debian-12’s kernels, checksums of every file', async () => {
    expect(manifest).toMatchObject({ name: 'docker-host', iscsiSyntax: 'debian' });
    expect(Object.keys(raw.arches).sort()).toEqual(['arm64', 'armv7']);
    expect(manifest.cmdline).toMatch(/^console=\{\{console\}\} root=UUID=[0-9a-f-]{36} ro$/);
    // Memory cgroups need nothing on these kernels (docs/shared-boards.md §1): no flags at all.
    expect(manifest.cmdline).not.toMatch(/cgroup|swapaccount/);
    const base = JSON.parse(readFileSync(join(BASE_OUT, 'manifest.json'), 'utf8')) as typeof raw & { cmdline: string; sha256: Record<string, string> };
    expect(ROOT_UUID_RE.exec(manifest.cmdline)?.[1]).not.toBe(ROOT_UUID_RE.exec(base.cmdline)?.[1]);

    const sums = manifest.sha256 ?? {};
    for (const a of ['armv7', 'arm64'] as const) {
      const e = raw.arches[a];
      expect(e.kernelVersion).toBe(base.arches[a].kernelVersion);
      for (const p of ['docker.io', 'containerd', 'runc', 'tini', 'iptables', 'btrfs-progs', 'openssh-server']) expect(e.packages, `${a}: ${p}`).toHaveProperty(p);
      expect(e.packages['docker.io']).toMatch(/^20\.10\./);
      // Same kernel, initramfs and device trees as debian-12: the bytes debian-12's manifest names.
      for (const f of [e.kernel, e.initrd, ...Object.values(e.dtbs)]) expect(sums[f], f).toBe(base.sha256[f]);
      expect(sums[e.rootDisk]).not.toBe(base.sha256[e.rootDisk]);
    }
    expect(Object.keys(sums).sort()).toEqual(listFiles(OUT).filter((f) => f !== 'manifest.json' && f !== 'SHA256SUMS').sort());
    for (const [f, h] of Object.entries(sums)) expect(await sha256File(join(OUT, f)), f).toBe(h);
    const sumsFile = readFileSync(join(OUT, 'SHA256SUMS'), 'utf8').trim().split('\n').map((l) => l.split(/\s+\*?/));
    expect(Object.fromEntries(sumsFile.map(([h, f]) => [f, h]))).toEqual(sums);
  }, 180_000);

  describe.each([
    { arch: 'armv7' as const, machine: 40 },
    { arch: 'arm64' as const, machine: 183 },
  ])('$arch root disk', ({ arch, machine }) => {
    it('is debian-12 + Docker: packages installed, dockerd of this arch, daemon.json, the units enabled, no TLS material baked in', async () => {
      const disk = raw.arches[arch].rootDisk;
      const layout = await readDiskLayout(join(OUT, disk));
      expect(layout).toMatchObject({ table: 'none', fs: { type: 'ext4', label: 'dozen-root' } });
      expect(layout!.table === 'none' ? layout!.fs.uuid : '?').toBe(ROOT_UUID_RE.exec(manifest.cmdline)?.[1]);
      const status = debugfs(disk, 'cat /var/lib/dpkg/status');
      for (const p of ['docker.io', 'containerd', 'runc', 'tini', 'iptables', 'btrfs-progs', 'apparmor', 'openssh-server', 'open-iscsi']) {
        expect(status, p).toMatch(new RegExp(`^Package: ${p.replace('.', '\\.')}\\n(?:[^\\n]+\\n)*?Status: install ok installed$`, 'm'));
      }
      expect(status).not.toMatch(/^Package: (cgroupfs-mount|git|needrestart)$/m); // no other Recommends
      expect(elfMachine(disk, '/usr/sbin/dockerd')).toBe(machine);
      expect(debugfs(disk, 'cat /etc/dozen-release')).toMatch(new RegExp(`^DOZEN_IMAGE=docker-host\\nBASE_IMAGE=debian-12\\nARCH=${arch}$`, 'm'));
      const daemon = JSON.parse(debugfs(disk, 'cat /etc/docker/daemon.json')) as Record<string, unknown>;
      expect(daemon).toMatchObject({ tlsverify: true, 'storage-driver': 'btrfs', 'data-root': '/var/lib/docker', tlscacert: '/etc/docker/tls/ca.pem' });
      expect(daemon.hosts).toContain('tcp://0.0.0.0:2376');
      const dropIn = debugfs(disk, 'cat /etc/systemd/system/docker.service.d/dozen.conf');
      expect(dropIn).toMatch(/^ExecStart=\nExecStart=\/usr\/sbin\/dockerd --containerd=/m); // no -H: daemon.json owns hosts
      expect(dropIn).toMatch(/^RequiresMountsFor=\/var\/lib\/docker$/m);
      expect(dropIn).toMatch(/^ConditionPathExists=\/etc\/docker\/tls\/server-key\.pem$/m);
      expect(dropIn).toMatch(/^Requires=dozen-docker-fence\.service$/m); // no engine without the fence
      const wants = debugfs(disk, 'ls -l /etc/systemd/system/multi-user.target.wants');
      for (const u of ['docker.service', 'containerd.service', 'dozen-docker-tls.service', 'dozen-docker-fence.service', 'dozen-firstboot.service']) expect(wants, u).toContain(u);
      expect(debugfs(disk, 'cat /etc/systemd/system/var-lib-docker.mount')).toMatch(/^What=\/dev\/disk\/by-label\/dozen-docker$/m);
      // The key is fetched before the phone-home that makes the controller's engine lease active (the
      // metadata service hands it out only while the lease is provisioning).
      expect(debugfs(disk, 'cat /etc/systemd/system/dozen-docker-tls.service')).toMatch(/^Before=docker\.service dozen-firstboot\.service$/m);
      // A labelled file system on the board's own storage (a former tenant's plant) is refused, not mounted.
      expect(debugfs(disk, 'cat /usr/local/sbin/dozen-docker-disk')).toMatch(/remote "\$found" \|\| \{ log "\$found is the board's own storage/);
      for (const s of ['dozen-docker-disk', 'dozen-docker-tls', 'dozen-docker-fence']) expect(debugfs(disk, `stat /usr/local/sbin/${s}`), s).toMatch(/Mode:\s+0755/);
      // Empty: the TLS material comes per lease, the data-root is the data disk's mount point.
      expect(entries(disk, '/etc/docker/tls')).toEqual(['.', '..']);
      expect(entries(disk, '/var/lib/docker')).toEqual(['.', '..']);
      expect(debugfs(disk, 'ls /etc/ssh')).not.toMatch(/ssh_host_/);
      expect(debugfs(disk, 'cat /etc/fstab')).toMatch(new RegExp(`^UUID=${ROOT_UUID_RE.exec(manifest.cmdline)?.[1]}\\s+/\\s+ext4`, 'm'));
    }, 60_000);
  });

  describe.each([
    // armv7 first (the shared boards today); it also runs a container (the armhf base image).
    { arch: 'armv7' as const, bin: 'qemu-system-arm', cpu: 'cortex-a15', uname: 'armv7l', container: true },
    { arch: 'arm64' as const, bin: 'qemu-system-aarch64', cpu: 'cortex-a53', uname: 'aarch64', container: false },
  ])('$arch boots on QEMU virt with a blank data disk and serves Docker over TLS', ({ arch, bin, cpu, uname, container }) => {
    const log = `docker-host-boot-${arch}.log`;
    let work: string;
    let qemu: ChildProcess | undefined;
    let out: OutputWatcher;
    // More readers of the same console: login: and the two units' lines come in any order.
    let disk: OutputWatcher;
    let tlsUnit: OutputWatcher;
    let meta: Server | undefined;
    let sshPort: number;
    let dockerPort: number;
    let exited: Promise<never>;
    let consoleLog = '';
    let t0 = 0;
    let tls: { ca: Buffer; cert: Buffer; key: Buffer };
    const served: string[] = [];

    const engine = (o: Partial<{ ca: Buffer; cert: Buffer; key: Buffer }> = tls) =>
      new Docker({ protocol: 'https', host: '127.0.0.1', port: dockerPort, ...o, timeout: 60_000 } as Docker.DockerOptions);
    const ssh = (cmd: string) =>
      spawnSync(
        'ssh',
        ['-i', join(work, 'id'), '-p', String(sshPort), '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no', '-o', `UserKnownHostsFile=${join(work, 'known_hosts')}`, '-o', 'ConnectTimeout=20', 'root@127.0.0.1', cmd],
        { encoding: 'utf8', timeout: 120_000 },
      );

    beforeAll(async () => {
      const e = raw.arches[arch];
      work = mkdtempSync(join(tmpdir(), `docker-host-boot-${arch}-`));
      execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'tenant@test', '-f', join(work, 'id')]);
      const pub = readFileSync(join(work, 'id.pub'), 'utf8').trim();
      // The engine CA signs the board's server certificate (SAN: the address the client dials through
      // hostfwd, and the guest's own) and the controller's client certificate; another CA, a rogue client.
      makeCa(join(work, 'engine'), 'dozen-test-engine-ca', [
        { name: 'server', cn: GUEST_IP, ext: `subjectAltName=IP:127.0.0.1,IP:${GUEST_IP}\nextendedKeyUsage=serverAuth\n` },
        { name: 'client', cn: 'dozen-control', ext: 'extendedKeyUsage=clientAuth\n' },
      ]);
      makeCa(join(work, 'rogue'), 'dozen-test-rogue-ca', [{ name: 'client', cn: 'dozen-control', ext: 'extendedKeyUsage=clientAuth\n' }]);
      const eng = (f: string) => readFileSync(join(work, 'engine', f));
      tls = { ca: eng('ca.pem'), cert: eng('client.pem'), key: eng('client-key.pem') };
      const files: Record<string, Buffer> = { 'docker-ca.pem': eng('ca.pem'), 'docker-server.pem': eng('server.pem'), 'docker-server-key.pem': eng('server-key.pem') };

      meta = createServer((req, res) => {
        served.push(`${req.method} ${req.url}`);
        if (req.method === 'GET' && req.url === '/m/i-dock/meta-data') return void res.end('instance-id: i-dock\nlocal-hostname: dock-test\n');
        if (req.method === 'GET' && req.url === '/m/i-dock/user-data') return void res.end(`#cloud-config\nhostname: dock-test\nssh_authorized_keys:\n  - ${JSON.stringify(pub)}\n`);
        const file = /^\/m\/i-dock\/(docker-[a-z-]+\.pem)$/.exec(req.url ?? '')?.[1];
        if (req.method === 'GET' && file && files[file]) return void res.end(files[file]);
        if (req.method === 'POST' && req.url === '/m/i-dock/phone-home') {
          req.resume();
          req.on('end', () => res.end('ok\n'));
          return;
        }
        res.statusCode = 404;
        res.end('not found\n');
      });
      await new Promise<void>((r) => meta!.listen(0, '127.0.0.1', r));
      const metaPort = (meta.address() as AddressInfo).port;
      sshPort = await freePort();
      dockerPort = await freePort();
      const root = join(work, 'root.qcow2');
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', join(OUT, e.rootDisk), '-F', 'raw', root, '2G']);
      // Docker's data disk: blank and sparse, as a fresh LUN would be; the guest formats it.
      const data = join(work, 'data.img');
      writeFileSync(data, '');
      execFileSync('truncate', ['-s', '2G', data]);
      const url = 'http://10.0.2.100/m/i-dock/';
      const cmdline = `${manifest.cmdline.replace('{{console}}', 'ttyAMA0,115200')} ds=nocloud-net;s=${url} dozen.phonehome=${url}phone-home`;
      t0 = Date.now();
      qemu = spawn(
        bin,
        [
          ...['-M', 'virt', '-cpu', cpu, '-smp', '2', '-m', '1024', '-nodefaults', '-display', 'none', '-monitor', 'none', '-serial', 'stdio'],
          ...['-kernel', join(OUT, e.kernel), '-initrd', join(OUT, e.initrd), '-append', cmdline],
          ...['-drive', `file=${root},if=none,format=qcow2,id=hd0`, '-device', 'virtio-blk-device,drive=hd0'],
          ...['-drive', `file=${data},if=none,format=raw,id=hd1`, '-device', 'virtio-blk-device,drive=hd1'],
          // restrict=on: the guest reaches only the metadata server (guestfwd); we reach its SSH and 2376 (hostfwd).
          ...['-netdev', `user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:80-tcp:127.0.0.1:${metaPort},hostfwd=tcp:127.0.0.1:${sshPort}-:22,hostfwd=tcp:127.0.0.1:${dockerPort}-:2376`],
          ...['-device', 'virtio-net-device,netdev=n0'],
        ],
        { stdio: ['pipe', 'pipe', 'pipe'] },
      );
      qemu.stdout!.on('data', (d) => (consoleLog += d));
      out = new OutputWatcher(qemu.stdout!, 4 << 20);
      disk = new OutputWatcher(qemu.stdout!, 4 << 20);
      tlsUnit = new OutputWatcher(qemu.stdout!, 4 << 20);
      let stderr = '';
      qemu.stderr!.on('data', (d) => (stderr += d));
      exited = new Promise((_, rej) =>
        qemu!.once('exit', (code, sig) => rej(new Error(`QEMU exited (code ${code}, signal ${sig}): ${stderr.trim()}; console:\n${consoleLog.slice(-3000)}`))),
      );
      exited.catch(() => {});
    });

    afterAll(async () => {
      if (qemu && qemu.exitCode === null && qemu.signalCode === null) {
        const gone = new Promise((r) => qemu!.once('exit', r));
        qemu.kill('SIGKILL');
        await gone;
      }
      meta?.close();
      mkdirSync(ARTIFACTS, { recursive: true });
      writeFileSync(join(ARTIFACTS, log), consoleLog);
      if (work) rmSync(work, { recursive: true, force: true });
    });

    const wait = (w: OutputWatcher, re: RegExp | string, ms: number, what: string) =>
      Promise.race([w.waitFor(re, ms, `${what} — docker-host ${arch} on QEMU virt (TCG); full log in test-artifacts/${log}`), exited]);

    it(
      'boots to login:, formats the blank data disk and installs the engine TLS material from the metadata',
      async () => {
        await wait(out, /Linux version 6\.1/, 60_000, 'kernel banner');
        await wait(disk, /dozen-docker-disk: formatting blank disk \/dev\/vd[a-z] as btrfs, label dozen-docker/, LOGIN_TIMEOUT_MS, 'the data disk formatted');
        await wait(disk, /dozen-docker-disk: Docker's data disk: \/dev\/vd[a-z] \(new btrfs/, 120_000, 'the data disk ready');
        await wait(out, /login: /, LOGIN_TIMEOUT_MS, '"login:" prompt');
        console.log(`docker-host ${arch}: login: after ${((Date.now() - t0) / 1000).toFixed(1)} s`);
        await wait(tlsUnit, /dozen-docker-tls: installed the engine's TLS material/, LOGIN_TIMEOUT_MS, 'the TLS material installed');
        expect(served).toEqual(expect.arrayContaining(['GET /m/i-dock/docker-ca.pem', 'GET /m/i-dock/docker-server.pem', 'GET /m/i-dock/docker-server-key.pem']));
        // The blank file now starts a btrfs: its superblock magic at 64 KiB + 0x40.
        const fd = openSync(join(work, 'data.img'), 'r');
        const b = Buffer.alloc(8);
        readSync(fd, b, 0, 8, 0x10040);
        closeSync(fd);
        expect(b.toString('latin1')).toBe('_BHRfS_M');
      },
      LOGIN_TIMEOUT_MS * 2,
    );

    it('answers /_ping over TLS with the controller’s client certificate', async () => {
      let last = '';
      const ok = await until(
        'the engine answering /_ping over TLS',
        async () => {
          try {
            return String(await engine().ping()) === 'OK';
          } catch (err) {
            last = (err as Error).message;
            return false;
          }
        },
        { timeoutMs: PING_TIMEOUT_MS, intervalMs: 2000, detail: () => `last error: ${last}; console:\n${consoleLog.slice(-2000)}` },
      );
      expect(ok).toBe(true);
      console.log(`docker-host ${arch}: /_ping over TLS after ${((Date.now() - t0) / 1000).toFixed(1)} s from power-on (QEMU TCG)`);
    }, PING_TIMEOUT_MS + 30_000);

    it('docker info: storage driver btrfs on the data disk, cgroup v2 with memory, user namespaces', async () => {
      const info = (await engine().info()) as Record<string, unknown>;
      expect(info.Driver).toBe('btrfs');
      expect(info.CgroupVersion).toBe('2');
      expect(info.CgroupDriver).toBe('systemd');
      expect(info.MemoryLimit).toBe(true);
      expect(info.SwapLimit).toBe(true);
      expect(String(info.DockerRootDir)).toMatch(/^\/var\/lib\/docker\b/);
      expect(info.SecurityOptions as string[]).toEqual(expect.arrayContaining([expect.stringMatching(/^name=userns/), 'name=cgroupns']));
      expect(info.Warnings ?? []).not.toEqual(expect.arrayContaining([expect.stringMatching(/swap limit|memory limit/i)]));

      // On the board itself: the controllers, the mount, quotas on, the key's mode.
      const r = ssh(
        'cat /sys/fs/cgroup/cgroup.controllers; findmnt -no FSTYPE,SOURCE,LABEL /var/lib/docker; btrfs qgroup show /var/lib/docker >/dev/null && echo quota=on; stat -c "%a %n" /etc/docker/tls/*.pem; uname -m; cat /proc/cmdline; systemctl is-active docker containerd var-lib-docker.mount dozen-docker-disk dozen-docker-tls dozen-docker-fence; echo failed=$(systemctl --failed --no-legend --plain | cut -d" " -f1 | paste -sd,)',
      );
      expect(r.status, r.stderr).toBe(0);
      const lines = r.stdout.split('\n');
      expect(lines[0]!.split(' ')).toEqual(expect.arrayContaining(['memory', 'pids', 'cpu', 'io']));
      expect(r.stdout).toMatch(/^btrfs\s+\/dev\/vd[a-z]\s+dozen-docker$/m);
      expect(r.stdout).toMatch(/^quota=on$/m);
      for (const f of ['ca', 'server', 'server-key']) expect(r.stdout).toMatch(new RegExp(`^600 /etc/docker/tls/${f}\\.pem$`, 'm'));
      expect(r.stdout).toMatch(new RegExp(`^${uname}$`, 'm'));
      expect(r.stdout).not.toMatch(/cgroup_enable|swapaccount/);
      expect(r.stdout).toMatch(/^active\nactive\nactive\nactive\nactive\nactive$/m);
      expect(r.stdout).toMatch(/^failed=$/m);
    }, 180_000);

    it('refuses clients without a certificate of its CA, and plain HTTP gets nothing from the API', async () => {
      const rogue = (f: string) => readFileSync(join(work, 'rogue', f));
      // The rogue client trusts the real server (so only the server's check of the client can fail).
      await expect(engine({ ca: tls.ca, cert: rogue('client.pem'), key: rogue('client-key.pem') }).ping()).rejects.toThrow();
      await expect(engine({ ca: tls.ca }).ping()).rejects.toThrow();
      // And a client that trusts only another CA does not accept the board's server certificate.
      await expect(engine({ ca: rogue('ca.pem'), cert: tls.cert, key: tls.key }).ping()).rejects.toThrow(/certificate/i);
      const answer = await plainHttp(dockerPort);
      expect(answer).not.toMatch(/^HTTP\/1\.[01] 200/);
      expect(answer).not.toMatch(/Api-Version|OK$/i);
      // Still fine for the real client afterwards.
      expect(String(await engine().ping())).toBe('OK');
    }, 120_000);

    // armv7 only: the container base image is armhf (images/container-armhf).
    if (container) it('runs a container from an imported rootfs with a disk quota and a memory limit, both read back on the board', async () => {
      expect(statSync(CONTAINER_TAR, { throwIfNoEntry: false }), `${CONTAINER_TAR}: run bash images/container-armhf/build.sh`).toBeDefined();
      const d = engine();
      const stream = await d.importImage(createReadStream(CONTAINER_TAR), { repo: 'dozen/test-base', tag: 'latest' });
      await new Promise<void>((res, rej) => d.modem.followProgress(stream, (err: Error | null) => (err ? rej(err) : res())));
      const mem = 64 * 2 ** 20;
      const c = await d.createContainer({
        Image: 'dozen/test-base:latest',
        Cmd: ['/bin/sleep', '600'],
        HostConfig: { Memory: mem, MemorySwap: mem, StorageOpt: { size: '96M' }, NetworkMode: 'none' },
      });
      await c.start();
      const info = await c.inspect();
      expect(info.State.Running).toBe(true);
      expect(info.HostConfig.StorageOpt).toEqual({ size: '96M' });
      expect(info.AppArmorProfile).toBe('docker-default'); // Debian's kernel has AppArmor on: containers are confined
      const id = info.Id;
      const r = ssh(`cat /sys/fs/cgroup/system.slice/docker-${id}.scope/memory.max /sys/fs/cgroup/system.slice/docker-${id}.scope/memory.swap.max; btrfs qgroup show -r --raw /var/lib/docker`);
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`^${mem}\\n0\\n`));
      // The container's subvolume's qgroup: max referenced = the size asked for.
      expect(r.stdout).toMatch(new RegExp(`\\s${96 * 2 ** 20}\\s`));
      // The quota bites: writing past 96 MiB in the container's root fails with EDQUOT.
      const exec = await c.exec({ Cmd: ['/bin/sh', '-c', 'dd if=/dev/zero of=/big bs=1M count=200 2>&1; sync; echo rc=$?'], AttachStdout: true, AttachStderr: true });
      const s = await exec.start({ hijack: true, stdin: false });
      const text = await new Promise<string>((res) => {
        let t = '';
        s.on('data', (b: Buffer) => (t += b.toString('latin1')));
        s.on('end', () => res(t));
      });
      expect(text).toMatch(/Disk quota exceeded/);
      await c.remove({ force: true });
    }, 300_000);

    if (container) it('fences containers off the boot network and the board: no metadata server, no Docker API from inside', async () => {
      const d = engine();
      // From a container on Docker's default bridge: TCP to the metadata server (guestfwd 10.0.2.100:80)
      // and to this board's own Docker API. busybox nc exits 1 when it cannot connect (-w 3 bounds the
      // connect); a connection that was made ends by the server closing it (0) or by `timeout` (not 1).
      const c = await d.createContainer({ Image: 'dozen/test-base:latest', Cmd: ['/bin/sleep', '600'] });
      await c.start();
      const probe = async () => {
        const t0 = Date.now();
        const exec = await c.exec({ Cmd: ['/bin/sh', '-c', 'for t in 10.0.2.100:80 10.0.2.15:2376; do timeout 8 nc -w 3 ${t%:*} ${t#*:} </dev/null >/dev/null 2>&1; echo "$t rc=$?"; done'], AttachStdout: true, AttachStderr: true });
        const s = await exec.start({ hijack: true, stdin: false });
        const out = await new Promise<string>((res) => {
          let t = '';
          s.on('data', (b: Buffer) => (t += b.toString('latin1')));
          s.on('end', () => res(t));
        });
        console.log(`fence probe (${Date.now() - t0} ms): ${out.replace(/[^\x20-\x7e\n]/g, '').trim().replace(/\n/g, '; ')}`);
        return out;
      };
      const fenced = await probe();
      expect(fenced).toMatch(/10\.0\.2\.100:80 rc=1$/m);
      expect(fenced).toMatch(/10\.0\.2\.15:2376 rc=1$/m);
      // IPv6 too: everything from a container bridge to the board or forwarded is dropped.
      const v6 = ssh('ip6tables -w -S DOZEN-FENCE6; ip6tables -w -S INPUT; ip6tables -w -S FORWARD').stdout;
      for (const rule of ['-A DOZEN-FENCE6 -i docker0 -j DROP', '-A DOZEN-FENCE6 -i br-+ -j DROP', '-A INPUT -j DOZEN-FENCE6', '-A FORWARD -j DOZEN-FENCE6']) expect(v6, rule).toContain(rule);
      expect(ssh('journalctl -b -u dozen-docker-fence --no-pager -o cat').stdout).toMatch(/containers fenced off the boot network \(10\.0\.2\.15\/24 via \S+, metadata 10\.0\.2\.100\)/);
      // The same probe with the fence's rules emptied reaches both: the probe can tell.
      expect(ssh('iptables -w -F DOCKER-USER && iptables -w -F DOZEN-FENCE-IN').status).toBe(0);
      const open = await probe();
      expect(open).toMatch(/10\.0\.2\.100:80 rc=(?!1$)\d+$/m);
      expect(open).toMatch(/10\.0\.2\.15:2376 rc=(?!1$)\d+$/m);
      expect(ssh('/usr/local/sbin/dozen-docker-fence').status).toBe(0); // and back
      expect(await probe()).toMatch(/10\.0\.2\.15:2376 rc=1$/m);
      await c.remove({ force: true });
    }, 300_000);
  });
});

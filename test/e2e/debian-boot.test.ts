/**
 * A lab board boots the real Debian 12 image with its root file system on iSCSI, all real: U-Boot's
 * DHCP and TFTP against our servers, the armmp kernel, initramfs-tools' open-iscsi script logging in
 * with CHAP to our tgtd (src/storage: IscsiBoardStorage.attach + kernelArgs), systemd on the iSCSI
 * root, the first-boot unit fetching metadata and phoning home, and `login:` on the serial console.
 *
 * The server does not hand a board its storage's kernel arguments by itself yet (no lease in this
 * test), so the board is pointed at a boot-only image: debian-12's kernel and initrd with the
 * iSCSI and metadata arguments in its command line, exactly what the decider's extraArgs will add
 * for a lease. When the lease service drives storage in the lab, this becomes a POST /v1/leases.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, REPO_ROOT } from '../../src/config.js';
import type { Image } from '../../src/images/catalog.js';
import { powerDriver } from '../../src/power/registry.js';
import { startServer, type RunningServer } from '../../src/server.js';
import type { DiskStore } from '../../src/storage/disk-store.js';
import { IscsiBoardStorage } from '../../src/storage/iscsi-storage.js';
import { openDiskStore } from '../../src/storage/open-store.js';
import type { TgtDaemon } from '../../src/storage/tgt-daemon.js';
import type { Board, Lease } from '../../src/store/schema.js';
import { sessionConsole, type TestConsole } from '../helpers/serial.js';
import { requireRoot, requireTools } from '../helpers/tools.js';
import { startTestTgt } from '../storage/tgt-fixture.js';

const BOOT_IP = '10.83.0.1';
/** From power-on: U-Boot, TFTP of ~12 MB, kernel, iSCSI login, systemd, all emulated (TCG). */
const LOGIN_TIMEOUT_MS = 420_000;

let server: RunningServer;
let daemon: TgtDaemon | undefined;
let storage: IscsiBoardStorage;
let store: DiskStore;
let meta: Server;
let con: TestConsole;
let board: Board;
let lease: Lease;
let consoleLog = '';
const phoneHome: Array<Record<string, string>> = [];
let poweredOnAt = 0;
const work = mkdtempSync(join(tmpdir(), 'debian-boot-'));

beforeAll(async () => {
  requireRoot();
  requireTools('qemu-system-arm', 'ip', 'mkimage', 'tgtd', 'tgtadm', 'ssh', 'ssh-keygen', 'debootstrap');
  execFileSync('bash', [join(REPO_ROOT, 'images/debian-12/build.sh')], { stdio: 'ignore', timeout: 1_500_000 });

  const dataDir = join(work, 'data');
  server = await startServer(
    loadConfig(undefined, {
      dataDir,
      api: '127.0.0.1:0',
      bootIp: BOOT_IP,
      subnet: '10.83.0.0/24',
      metadata: { port: 8777 },
      lab: { enabled: true, boards: 1, netns: `dzd-${randomBytes(3).toString('hex')}`, powerOn: false, memoryMb: 512 },
    }),
  );
  board = server.inventory.list()[0]!;

  // Storage as the server will run it: a disk store (btrfs/reflink/copy, probed) and our own tgtd,
  // its portal on the boot network.
  ({ store } = await openDiskStore(join(dataDir, 'storage')));
  const tgt = await startTestTgt(BOOT_IP);
  daemon = tgt.daemon;
  lease = { id: `l-${randomBytes(4).toString('hex')}`, tenantId: 't1', kind: 'board', boardId: board.id, image: 'debian-12', sshKeys: [], hostname: 'deb-iscsi', state: 'provisioning', createdAt: new Date().toISOString() };
  storage = new IscsiBoardStorage({ store, exporter: tgt.exporter, daemon, recorded: () => [lease] });
  const image = (await server.images.get('debian-12')) as Image;
  expect(image, 'images/debian-12/build is in the catalog').toBeTruthy();
  lease.iscsi = await storage.attach(lease, board, image);

  // The tenant's key and the metadata service, on the boot network where the board can reach them.
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'tenant@e2e', '-f', join(work, 'id')]);
  const pub = readFileSync(join(work, 'id.pub'), 'utf8').trim();
  meta = createServer((req, res) => {
    if (req.url === `/m/${lease.id}/meta-data`) return void res.end(`instance-id: ${lease.id}\nlocal-hostname: ${lease.hostname}\n`);
    if (req.url === `/m/${lease.id}/user-data`) return void res.end(`#cloud-config\nssh_authorized_keys:\n  - ${JSON.stringify(pub)}\n`);
    if (req.method === 'POST' && req.url === `/m/${lease.id}/phone-home`) {
      let body = '';
      req.on('data', (d) => (body += d)).on('end', () => (phoneHome.push(Object.fromEntries(new URLSearchParams(body))), res.end('ok\n')));
      return;
    }
    res.statusCode = 404;
    res.end();
  });
  await new Promise<void>((r) => meta.listen(0, BOOT_IP, r));
  const url = `http://${BOOT_IP}:${(meta.address() as AddressInfo).port}/m/${lease.id}/`;

  // The boot-only image: debian-12's kernel and initrd, the lease's arguments on its command line.
  const dir = join(dataDir, 'images', 'debian-12-iscsi');
  mkdirSync(dir, { recursive: true });
  for (const f of ['vmlinuz', 'initrd.img']) copyFileSync(join(image.dir, f), join(dir, f));
  const cmdline = `${image.manifest.cmdline} ${storage.kernelArgs(lease.iscsi, image)} ds=nocloud-net;s=${url} dozen.phonehome=${url}phone-home`;
  writeFileSync(join(dir, 'manifest.json'), JSON.stringify({ name: 'debian-12-iscsi', arch: 'armv7', kernel: 'vmlinuz', initrd: 'initrd.img', cmdline, rootDisk: null }));
  server.images.invalidate();
  board = await server.inventory.patch(board.id, { image: 'debian-12-iscsi' });

  // The server's console session holds the serial line (opened before power-on): read through it.
  con = sessionConsole(server.consoles, board.id);
  server.consoles.get(board.id)!.on('data', (d: Buffer | string) => (consoleLog += d.toString()));
  poweredOnAt = Date.now();
  await powerDriver(board.power).on();
}, 1_800_000);

afterAll(async () => {
  mkdirSync(join(REPO_ROOT, 'test-artifacts'), { recursive: true });
  writeFileSync(join(REPO_ROOT, 'test-artifacts', 'debian-boot-iscsi.log'), consoleLog);
  await con?.close();
  meta?.close();
  if (lease?.iscsi) await storage.detach(lease).catch(() => {});
  await daemon?.stop();
  await server?.stop({ labDown: true });
});

describe('a lab board boots debian-12 with its root on iSCSI', () => {
  const what = (step: string) => `${board.id} (${step}); debian-12 over iSCSI under QEMU TCG, full console in test-artifacts/debian-boot-iscsi.log`;

  it(
    'U-Boot → our boot script → kernel → iSCSI login with CHAP → systemd → login:',
    async () => {
      await con.out.waitFor(/U-Boot 20\d\d/, 60_000, what('U-Boot banner'));
      await con.out.waitFor(`dozen: board ${board.id}`, 90_000, what('our boot script'));
      await con.out.waitFor(/Linux version 6\.1/, 120_000, what('kernel banner after TFTP of kernel and initrd'));
      // The LUN appears as a SCSI disk once the initramfs's iscsistart has logged in.
      await con.out.waitFor(/sd \d+:\d+:\d+:\d+: \[sda\] Attached SCSI disk/, 180_000, what('iSCSI disk sda attached by the initramfs'));
      await con.out.waitFor(/login: /, LOGIN_TIMEOUT_MS, what('"login:" prompt'));
      console.log(`debian-12 over iSCSI: login: ${((Date.now() - poweredOnAt) / 1000).toFixed(1)} s after power-on (lab board, QEMU TCG)`);
    },
    LOGIN_TIMEOUT_MS + 120_000,
  );

  it('the first-boot unit read its metadata and phoned home from the iSCSI root', async () => {
    for (let i = 0; i < 240 && !phoneHome.length; i++) await new Promise((r) => setTimeout(r, 500));
    expect(phoneHome[0], `no phone-home; console tail: ${consoleLog.slice(-2000)}`).toMatchObject({ instance_id: lease.id, hostname: 'deb-iscsi' });
  }, 150_000);

  it('over SSH with the tenant’s key: / is the iSCSI disk from our target', async () => {
    const ssh = (cmd: string) =>
      spawnSync('ssh', ['-i', join(work, 'id'), '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'ConnectTimeout=15', `root@${board.ip}`, cmd], {
        encoding: 'utf8',
        timeout: 60_000,
      });
    let r = ssh('true');
    for (let i = 0; i < 30 && r.status !== 0; i++) {
      await new Promise((res) => setTimeout(res, 2000));
      r = ssh('true');
    }
    expect(r.status, r.stderr).toBe(0);
    // iscsid must have taken the initramfs's session over: only it reconnects after a network blip
    // or a tgtd restart.
    r = ssh('findmnt -no SOURCE /; cat /sys/class/iscsi_session/session*/targetname; hostname; systemctl is-active iscsid; iscsiadm -m session -P 1 | grep -c "Session State: LOGGED_IN"');
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.trim().split('\n')).toEqual(['/dev/sda', lease.iscsi!.iqn, 'deb-iscsi', 'active', '1']);
  }, 150_000);

  it('survives tgtd dying: the supervisor re-creates the target, iscsid logs back in, the root stays writable', async () => {
    const pid = daemon!.pid!;
    const restarts = daemon!.restarts.length;
    process.kill(pid, 'SIGKILL');
    for (let i = 0; i < 100 && daemon!.restarts.length === restarts; i++) await new Promise((r) => setTimeout(r, 200));
    expect(daemon!.restarts.length, 'tgtd restarted by its supervisor').toBe(restarts + 1);
    const ssh = spawnSync(
      'ssh',
      ['-i', join(work, 'id'), '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'ConnectTimeout=15', `root@${board.ip}`,
        'echo after-restart > /root/mark && sync && cat /root/mark && iscsiadm -m session -P 1 | grep -c "Session State: LOGGED_IN"'],
      { encoding: 'utf8', timeout: 120_000 },
    );
    expect(ssh.status, `${ssh.stderr}\nconsole tail: ${consoleLog.slice(-1500)}`).toBe(0);
    expect(ssh.stdout.trim().split('\n')).toEqual(['after-restart', '1']);
  }, 180_000);
});

/**
 * A lab board boots the real Debian 12 image with its root file system on iSCSI, all real: a
 * tenant's lease (POST /v1/leases) → the storage clones root.img and exports it from our tgtd with
 * CHAP → U-Boot's DHCP and TFTP against our servers → the armmp kernel → initramfs-tools' open-iscsi
 * script logs in (iscsi_* arguments from IscsiBoardStorage.kernelArgs) → systemd on /dev/sda →
 * `login:` on the serial console, and dozen-firstboot's phone-home makes the lease active.
 *
 * What the image must do beyond booting (test/e2e/lease-lifecycle.test.ts covers reimage and
 * release): iscsid takes the initramfs's session over, so the root survives tgtd being killed and
 * restarted by its supervisor.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, REPO_ROOT } from '../../src/config.js';
import { startServer, type RunningServer } from '../../src/server.js';
import type { Lease } from '../../src/store/schema.js';
import { sessionConsole, type TestConsole } from '../helpers/serial.js';
import { buildLabImage } from '../helpers/lab-server.js';
import { requireRoot, requireTools } from '../helpers/tools.js';
import { until } from '../helpers/until.js';
import { freeControlPort, freePort, restarted } from '../storage/tgt-fixture.js';

const BOOT_IP = '10.83.0.1';
/** From the lease request: clone, U-Boot, TFTP of ~12 MB, kernel, iSCSI login, systemd, all emulated (TCG). */
const LOGIN_TIMEOUT_MS = 420_000;

let server: RunningServer;
let con: TestConsole;
let consoleLog = '';
let lease: Lease;
let jobId = '';
let requestedAt = 0;
let boardIp = '';
const work = mkdtempSync(join(tmpdir(), 'debian-boot-'));
const key = join(work, 'id');

async function api(method: string, path: string, body?: unknown, token = server.adminToken) {
  const r = await fetch(`${server.apiUrl}/v1${path}`, { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: r.status, body: (await r.json().catch(() => undefined)) as any };
}

function ssh(command: string) {
  return spawnSync('ssh', ['-i', key, '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'ConnectTimeout=15', `root@${boardIp}`, command], {
    encoding: 'utf8',
    timeout: 120_000,
  });
}

beforeAll(async () => {
  requireRoot();
  requireTools('qemu-system-arm', 'ip', 'mkimage', 'tgtd', 'tgtadm', 'ssh', 'ssh-keygen', 'debootstrap');
  buildLabImage('test'); // what the lab enrols its board with; the lease boots debian-12
  execFileSync('bash', [join(REPO_ROOT, 'images/debian-12/build.sh')], { stdio: 'ignore', timeout: 1_500_000 });
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'tenant@e2e', '-f', key]);
  server = await startServer(
    loadConfig(undefined, {
      dataDir: join(work, 'data'),
      api: '127.0.0.1:0',
      bootIp: BOOT_IP,
      subnet: '10.83.0.0/24',
      metadata: { port: await freePort('0.0.0.0') }, // free on every address: it binds the lab's boot IP
      gateway: { listen: '127.0.0.1:0' },
      lab: { enabled: true, boards: 1, netns: `dzd-${randomBytes(3).toString('hex')}`, powerOn: false },
      // The disk store probes its directory (btrfs → reflink → copy); a plain tmp dir copies root.img.
      storage: { enabled: true, dir: join(work, 'storage'), tgt: { controlPort: freeControlPort() } },
      leases: { osTimeoutMs: LOGIN_TIMEOUT_MS },
    }),
  );
  const board = server.inventory.list()[0]!;
  boardIp = board.ip;
  // The server's console session holds the serial line from before power-on: read through it.
  con = sessionConsole(server.consoles, board.id);
  server.consoles.get(board.id)!.on('data', (d: Buffer | string) => (consoleLog += d.toString()));

  const token = (await api('POST', '/tenants', { id: 'dora', name: 'Dora' })).body.token;
  requestedAt = Date.now();
  const created = await api('POST', '/leases', { image: 'debian-12', sshKeys: [readFileSync(`${key}.pub`, 'utf8').trim()], hostname: 'deb-iscsi' }, token);
  expect(created.status, JSON.stringify(created.body)).toBe(202);
  jobId = created.body.job.id;
  lease = created.body.lease;
}, 1_800_000);

afterAll(async () => {
  mkdirSync(join(REPO_ROOT, 'test-artifacts'), { recursive: true });
  writeFileSync(join(REPO_ROOT, 'test-artifacts', 'debian-boot-iscsi.log'), consoleLog);
  await server?.stop({ labDown: true });
  rmSync(work, { recursive: true, force: true });
});

describe('a lab board boots debian-12 with its root on iSCSI', () => {
  const what = (step: string) => `lab-1 (${step}); debian-12 over iSCSI under QEMU TCG, full console in test-artifacts/debian-boot-iscsi.log`;

  it(
    'lease → U-Boot → our boot script → kernel → iSCSI login with CHAP → systemd → login: → phone-home (lease active)',
    async () => {
      await con.out.waitFor(/U-Boot 20\d\d/, 120_000, what('U-Boot banner'));
      await con.out.waitFor(/dozen: board lab-1 .* boots image debian-12/, 90_000, what('our boot script'));
      await con.out.waitFor(/Linux version 6\.1/, 120_000, what('kernel banner after TFTP of kernel and initrd'));
      await con.out.waitFor(/iscsistart: Connection\S+ to \[target: iqn\.[^,]+, portal: [\d.]+,\d+\] .* is operational now/, 120_000, what('initramfs iSCSI login'));
      await con.out.waitFor(/sd \d+:\d+:\d+:\d+: \[sda\] Attached SCSI disk/, 60_000, what('iSCSI disk sda attached'));
      await con.out.waitFor(/dozen-firstboot: phoned home/, LOGIN_TIMEOUT_MS, what('dozen-firstboot phoning home'));
      await con.out.waitFor(/login: /, 120_000, what('"login:" prompt'));
      console.log(`debian-12 over iSCSI: login: ${((Date.now() - requestedAt) / 1000).toFixed(1)} s after the lease request (lab board, QEMU TCG)`);
      const job = await server.leases.settle(jobId);
      expect([job.state, job.error ?? '']).toEqual(['succeeded', '']);
      lease = (await api('GET', `/leases/${lease.id}`)).body;
      expect(lease.state).toBe('active');
    },
    LOGIN_TIMEOUT_MS + 300_000,
  );

  it('over SSH with the tenant’s key: / is the LUN of the lease’s target, iscsid holds the session', async () => {
    // sshd may come up a moment after the phone-home: wait for it to let us in (poll, 180 s at most).
    let refused = '';
    let r = await until('sshd letting the tenant in', () => {
      const tried = ssh('true');
      refused = tried.stderr;
      return tried.status === 0 ? tried : undefined;
    }, { timeoutMs: 180_000, intervalMs: 500, detail: () => `last ssh: ${refused.trim()}` });
    expect(r.status, r.stderr).toBe(0);
    // iscsid must have taken over the initramfs's session: only it reconnects after a network blip or a tgtd restart.
    // username_in: Debian's initramfs took iscsi_in_username/password and logged in with mutual CHAP.
    r = ssh('findmnt -no SOURCE /; cat /sys/class/iscsi_session/session*/targetname; hostname; systemctl is-active iscsid; iscsiadm -m session -P 1 | grep -c "Session State: LOGGED_IN"; cat /sys/class/iscsi_session/session*/username_in');
    expect(r.status, r.stderr).toBe(0);
    const rec = server.store.state.leases.find((l) => l.id === lease.id)!.iscsi!;
    expect(r.stdout.trim().split('\n')).toEqual(['/dev/sda', rec.iqn, 'deb-iscsi', 'active', '1', rec.targetUser]);
  }, 300_000);

  it('survives tgtd dying: its supervisor re-creates the target, iscsid logs back in, the root stays writable', async () => {
    const daemon = server.storage!.daemon;
    const restarts = daemon.restarts.length;
    process.kill(daemon.pid!, 'SIGKILL');
    await restarted(daemon, restarts);
    expect(daemon.restarts.length, 'tgtd restarted by its supervisor').toBe(restarts + 1);
    const r = ssh('echo after-restart > /root/mark && sync && cat /root/mark && iscsiadm -m session -P 1 | grep -c "Session State: LOGGED_IN"');
    expect(r.status, `${r.stderr}\nconsole tail: ${consoleLog.slice(-1500)}`).toBe(0);
    expect(r.stdout.trim().split('\n')).toEqual(['after-restart', '1']);
  }, 180_000);
});

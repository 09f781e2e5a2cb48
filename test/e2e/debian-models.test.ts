/**
 * Debian 12 on the lab's Banana Pi M2 Ultra (u-boot-sunxi from its SD card, pxelinux, armmp kernel with
 * the R40 device tree, the GMAC in the initramfs) and on an arm64 board (qemu_arm64 U-Boot, booti, the
 * arm64 build of the same image), each with its root on its lease's iSCSI disk: ssh with the lease's
 * key, a root shell on the model's serial console, reimage to a fresh disk, and release.
 *
 * Every boot must survive iscsid's takeover of the initramfs's session (it stops the connection and logs
 * in again): the root stays writable and the console never says "session recovery timed out". On the
 * emulated Banana Pi it did not, until the image mounted its root noatime (images/debian-12/build.sh).
 */
import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../../src/config.js';
import { Lab } from '../../src/lab/lab.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { iscsiLabConfig } from '../helpers/lab-server.js';
import { runOnConsole, sessionConsole, type TestConsole } from '../helpers/serial.js';
import { requireRoot, requireTools } from '../helpers/tools.js';
import { until } from '../helpers/until.js';
import { makeLoopFs, type LoopFs } from '../storage/loop-fs.js';

const BOOT_IP = '10.95.0.1';
const LAB = 'bpim2u:1,arm64:1';
const BOOT_MS = 600_000;
const JOB_MS = 900_000;
const ROOT_PW = `pw-${randomBytes(6).toString('hex')}`;
// The Banana Pi's lease asks for a console password; the arm64 one does not, and root's password is set over ssh.
const BOARDS: Array<{ id: string; model: string; machine: string; tty: string; consolePassword: string | undefined }> = [
  { id: 'lab-1', model: 'bananapi-m2u', machine: 'armv7l', tty: '/dev/ttyS0', consolePassword: `cp-${randomBytes(6).toString('hex')}` },
  { id: 'lab-2', model: 'qemu-virt-arm64', machine: 'aarch64', tty: '/dev/ttyAMA0', consolePassword: undefined },
];
type TestBoard = (typeof BOARDS)[number];
/** Each board's console since the server started (the last 256 KiB): failures quote its tail. */
const consoleText = new Map<string, string>();
const tail = (b: TestBoard, n = 400) => JSON.stringify((consoleText.get(b.id) ?? '').slice(-n));
let server: RunningServer;
let fs: LoopFs;
let token = '';
const work = mkdtempSync(join(tmpdir(), 'deb-models-'));
const netns = `dzn-${randomBytes(3).toString('hex')}`;
const key = join(work, 'id_ed25519');
const consoles = new Map<string, TestConsole>();
const leaseOf = new Map<string, string>();

async function api(method: string, path: string, body?: unknown, t = token) {
  const r = await fetch(`${server.apiUrl}/v1${path}`, { method, headers: { authorization: `Bearer ${t}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: r.status, body: (await r.json().catch(() => undefined)) as any };
}

async function jobSucceeds(jobId: string, b: TestBoard) {
  const job = await server.leases.settle(jobId);
  const secs = (st: { startedAt?: string; endedAt?: string }) => (st.startedAt && st.endedAt ? ((Date.parse(st.endedAt) - Date.parse(st.startedAt)) / 1000).toFixed(0) : '?');
  console.log(`${b.id} (${b.model}) ${job.kind} ${job.state}: ${job.steps.map((st) => `${st.name} ${secs(st)} s${st.attempts > 1 ? ` (${st.attempts} attempts)` : ''}`).join(', ')}`);
  const events = () => server.events.list(b.id).slice(-12).map((e) => `${e.time} ${e.type} ${e.message}`).join(' | ');
  expect([job.state, job.error ?? ''], `${b.id} (${b.model}) ${job.kind}: ${events()}; console: ${tail(b)}`).toEqual(['succeeded', '']);
}

/**
 * stdout in `out`; ssh's own notes (known hosts) and errors in `err`. Asynchronous: the server runs in this
 * process, and a blocking ssh would stall its metadata service and consoles for the other board.
 */
function ssh(ip: string, command: string): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    execFile('ssh', ['-i', key, '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR', '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=10', `root@${ip}`, command], { encoding: 'utf8', timeout: 60_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : null) : 0, out: stdout ?? '', err: stderr ?? '' }),
    );
  });
}

/** sshd may answer a moment after the phone-home: up to 180 s. A failure names the board and quotes its console. */
async function sshOk(b: TestBoard, command: string) {
  const ip = server.inventory.get(b.id).ip;
  let last = { code: null as number | null, out: '', err: '' };
  return until(`${b.id} (${b.model}): ssh ${ip} '${command.slice(0, 40)}'`, async () => ((last = await ssh(ip, command)).code === 0 ? last : undefined), {
    timeoutMs: 180_000,
    intervalMs: 1000,
    detail: () => `last ssh: ${JSON.stringify((last.out + last.err).trim().slice(-200))}; console: ${tail(b)}`,
  });
}

/**
 * A root shell on the board's serial console: with the lease's console password (which reached the board
 * as a hash in its metadata), or, for a lease without one, after the banner said how to set one and the
 * tenant set it over ssh.
 */
async function consoleLogin(b: TestBoard, what: string) {
  const con = consoles.get(b.id)!;
  if (!b.consolePassword) {
    // getty prints the banner a moment after sshd is up: wait for it rather than look once.
    await con.out.waitFor('root has no console password on this board', 120_000, `${b.id} (${what}: the no-password banner)`);
    expect((await sshOk(b, `echo root:${ROOT_PW} | chpasswd && echo PW-SET`)).out).toContain('PW-SET');
  }
  await con.type('\n');
  await con.out.waitFor(/login: /, 60_000, `${b.id} (${what}: login prompt)`);
  await con.type('root\n');
  await con.out.waitFor('Password:', 30_000, `${b.id} (${what}: password prompt)`);
  await con.type(`${b.consolePassword ?? ROOT_PW}\n`);
  await con.out.waitFor('# ', 60_000, `${b.id} (${what}: root shell)`);
  await runOnConsole(con, 'dmesg -n 1', { what: b.id });
}

/**
 * The root survived iscsid's takeover of the initramfs's session: it is still read-write (noatime: see the
 * header), a write reaches the disk, and the kernel never timed the session out.
 */
async function rootSurvived(b: TestBoard) {
  const got = await sshOk(b, 'touch /root/.dozen-alive && sync && findmnt -n -o OPTIONS /');
  expect(got.out.trim(), `${b.id}: root mount options`).toMatch(/^rw,noatime\b/);
  expect(consoleText.get(b.id) ?? '', `${b.id}: the iSCSI session timed out`).not.toContain('session recovery timed out');
}

beforeAll(async () => {
  requireRoot();
  requireTools('qemu-system-arm', 'qemu-system-aarch64', 'mkenvimage', 'mcopy', 'tgtd', 'tgtadm', 'ssh', 'ssh-keygen', 'mkfs.btrfs', 'debootstrap');
  execFileSync('bash', [join(REPO_ROOT, 'images/debian-12/build.sh')], { stdio: 'ignore', timeout: 2_400_000 });
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
  fs = makeLoopFs('btrfs', 8192);
  server = await startServer(await iscsiLabConfig({ dataDir: join(work, 'data'), prefix: '10.95.0', boards: LAB, netns, storageDir: fs.dir, osTimeoutMs: BOOT_MS, bootTimeoutMs: 300_000, image: 'debian-12' }));
  for (const b of BOARDS) {
    consoles.set(b.id, sessionConsole(server.consoles, b.id));
    server.consoles.get(b.id)!.on('data', (d: Buffer) => consoleText.set(b.id, ((consoleText.get(b.id) ?? '') + d.toString()).slice(-256 * 1024)));
  }
  token = (await api('POST', '/tenants', { id: 'erin', name: 'Erin' }, server.adminToken)).body.token;
}, 2_700_000);

afterAll(async () => {
  for (const c of consoles.values()) await c.close();
  if (server) await server.stop({ labDown: true });
  else await new Lab({ netns, bootIp: BOOT_IP, subnet: '10.95.0.0/24', boards: LAB, memoryMb: 512, stateDir: join(work, 'data', 'lab') }).down();
  fs?.cleanup();
  rmSync(work, { recursive: true, force: true });
});

describe('debian-12 on each board model', () => {
  it(
    'a lease reaches ssh with its iSCSI root; the model’s serial console shows the boot and gives a root shell',
    async () => {
      const pub = readFileSync(`${key}.pub`, 'utf8').trim();
      // One board at a time: two emulated boards booting Debian over iSCSI at once starve each other on
      // 2 cores (the Banana Pi's reimage once took 13 min beside the arm64 one).
      for (const b of BOARDS) {
        const created = await api('POST', '/leases', { image: 'debian-12', model: b.model, sshKeys: [pub], hostname: `erin-${b.machine}`, ...(b.consolePassword ? { consolePassword: b.consolePassword } : {}) });
        expect(created.status, JSON.stringify(created.body)).toBe(202);
        expect(created.body.lease.boardId).toBe(b.id);
        leaseOf.set(b.id, created.body.lease.id);
        await consoles.get(b.id)!.out.waitFor(/Linux version 6\./, BOOT_MS, `${b.id} (kernel on the console)`);
        await jobSucceeds(created.body.job.id, b);
        const got = await sshOk(b, 'hostname; uname -m; findmnt -n -o SOURCE /');
        expect(got.out.split('\n').filter(Boolean)).toEqual([`erin-${b.machine}`, b.machine, '/dev/sda']);
        await consoleLogin(b, 'first boot');
        await rootSurvived(b);
        expect((await runOnConsole(consoles.get(b.id)!, 'tty; uname -m', { what: b.id })).split(/\r?\n/).filter(Boolean)).toEqual([b.tty, b.machine]);
      }
    },
    JOB_MS * 2,
  );

  it(
    'reimage gives each board a fresh disk: what the tenant wrote is gone, ssh and the console work again',
    async () => {
      for (const b of BOARDS) {
        expect((await sshOk(b, 'echo was-here > /root/proof && sync && echo WROTE')).out).toContain('WROTE');
        const t0 = Date.now();
        const re = await api('POST', `/leases/${leaseOf.get(b.id)}/reimage`, {});
        expect(re.status, JSON.stringify(re.body)).toBe(202);
        await jobSucceeds(re.body.job.id, b);
        console.log(`${b.id} (${b.model}) reimage job ${Date.now() - t0} ms`);
        expect((await sshOk(b, 'test -e /root/proof && echo STILL-THERE || echo GONE')).out).toContain('GONE');
        await consoleLogin(b, 'after reimage');
        await rootSurvived(b);
      }
    },
    JOB_MS * 2,
  );

  it(
    'release frees each board and removes its disk',
    async () => {
      for (const b of BOARDS) {
        const id = leaseOf.get(b.id)!;
        const rel = await api('DELETE', `/leases/${id}`);
        await jobSucceeds(rel.body.job.id, b);
        expect(server.inventory.get(b.id).state).toBe('available');
        expect((await server.storage!.store.list()).map((d) => d.id)).not.toContain(id);
      }
    },
    JOB_MS * 2,
  );
});

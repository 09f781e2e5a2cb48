/**
 * A lab board (QEMU virt + Debian's U-Boot) leases the test image and runs with its root on a
 * per-lease iSCSI disk, all real: our DHCP/TFTP, the armmp kernel, iscsistart with CHAP in the initrd,
 * iscsid on the root, our supervised tgtd and a btrfs disk store on a loop device. Through the lease
 * API: a file written on the board survives a power cycle, is gone after a reimage, survives tgtd being
 * killed (the board keeps working), and a new lease after release starts from a clean disk.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../../src/config.js';
import { Lab } from '../../src/lab/lab.js';
import { startServer, type RunningServer } from '../../src/server.js';
import type { Lease } from '../../src/store/schema.js';
import { iscsiLabConfig } from '../helpers/lab-server.js';
import { runOnConsole, sessionConsole, type TestConsole } from '../helpers/serial.js';
import { requireRoot, requireTools } from '../helpers/tools.js';
import { makeLoopFs, type LoopFs } from '../storage/loop-fs.js';
import { iscsiInq, iscsiLs, restarted, TARGET_NOT_FOUND } from '../storage/tgt-fixture.js';

const BOOT_IP = '10.87.0.1';
/** From power-on to `login:` under TCG: U-Boot, TFTP, kernel, iSCSI login, the root's init. */
const BOOT_MS = 300_000;
const JOB_MS = 600_000;

let server: RunningServer;
let fs: LoopFs;
let con: TestConsole;
let tenantToken = '';
const work = mkdtempSync(join(tmpdir(), 'iscsi-e2e-'));
const netns = `dzi-${randomBytes(3).toString('hex')}`;

async function api(method: string, path: string, body?: unknown, token = tenantToken) {
  const r = await fetch(`${server.apiUrl}/v1${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: r.status, body: (await r.json().catch(() => undefined)) as any };
}

async function jobSucceeds(jobId: string) {
  const job = await server.leases.settle(jobId);
  expect([job.state, job.error ?? '']).toEqual(['succeeded', '']);
}

/** The lease as the server recorded it (the API hides the CHAP secret). */
const recorded = (id: string): Lease => server.store.state.leases.find((l) => l.id === id)!;

/** Waits for the root disk's marker and the login prompt, and logs in. */
async function bootedFromIscsi(lease: Lease, what: string) {
  const m = await con.out.waitFor(/DOZEN-TEST-IMAGE ROOT=iscsi target=(\S+) dev=(\S+)\r?\n/, BOOT_MS, `lab-1 (${what}: iSCSI root marker)`);
  expect(m[1]).toBe(recorded(lease.id).iscsi!.iqn);
  expect(m[2]).toBe('/dev/sda');
  await con.out.waitFor('login:', 60_000, `lab-1 (${what}: login prompt)`);
  await con.type('root\n');
  await con.out.waitFor('root@dozen:~# ', 30_000, `lab-1 (${what}: shell)`);
}

/** Runs a command on the board: its output only, so an `echo` in the command never matches itself. */
function sh(cmd: string, what: string, timeoutMs = 60_000): Promise<string> {
  return runOnConsole(con, cmd, { what: `lab-1 (${what})`, timeoutMs });
}

beforeAll(async () => {
  requireRoot();
  requireTools('qemu-system-arm', 'ip', 'mkimage', 'tgtd', 'tgtadm', 'iscsi-ls', 'mkfs.btrfs', 'btrfs', 'losetup');
  execFileSync('bash', [join(REPO_ROOT, 'images/test/build.sh')], { stdio: 'ignore', timeout: 600_000 });
  fs = makeLoopFs('btrfs', 1024);
  server = await startServer(await iscsiLabConfig({ dataDir: join(work, 'data'), prefix: '10.87.0', boards: 1, netns, storageDir: fs.dir, osTimeoutMs: BOOT_MS }));
  expect(server.storage!.store.kind).toBe('btrfs');
  con = sessionConsole(server.consoles, 'lab-1');
  tenantToken = (await api('POST', '/tenants', { id: 'carol', name: 'Carol' }, server.adminToken)).body.token;
}, 900_000);

afterAll(async () => {
  await con?.close();
  if (server) await server.stop({ labDown: true });
  else await new Lab({ netns, bootIp: BOOT_IP, subnet: '10.87.0.0/24', boards: 1, memoryMb: 512, stateDir: join(work, 'data', 'lab') }).down(); // a failed start leaves the lab up
  fs?.cleanup();
  rmSync(work, { recursive: true, force: true });
});

describe('a lab board with its root on its lease’s iSCSI disk', () => {
  let lease: Lease;

  it(
    'lease → the board boots the test image from its iSCSI disk, fetches its metadata and phones home',
    async () => {
      const created = await api('POST', '/leases', { image: 'test' });
      expect(created.status, JSON.stringify(created.body)).toBe(202);
      lease = created.body.lease;
      await bootedFromIscsi(lease, 'first boot');
      await jobSucceeds(created.body.job.id);
      expect((await api('GET', `/leases/${lease.id}`)).body.state).toBe('active');
      const mounts = await sh("awk '$2 == \"/\"' /proc/mounts; ls /sys/class/iscsi_session", 'MOUNTS');
      expect(mounts).toMatch(/\/dev\/sda \/ ext4 rw/);
      expect(mounts).toMatch(/session\d+/);
    },
    JOB_MS,
  );

  it('the lease’s metadata reached the board, and it phoned home', async () => {
    // Printed in the background during boot; the console log of the lease has it all.
    const log = await server.consoles.leaseLog(lease.id);
    let text = '';
    for await (const chunk of log!) text += chunk.toString();
    expect(text).toContain(`dozen: metadata instance-id ${lease.id}`);
    expect(text).toMatch(/dozen: phoned home to http:\/\/10\.87\.0\.1:\d+\/m\/l-[0-9a-f]+\/[A-Za-z0-9]{24}\/phone-home/);
    // The image prints its command line with the secret masked. The kernel's own boot messages show it
    // ("Kernel command line:", "Unknown kernel command line parameters"): that is the tenant's own
    // per-lease secret (also in /proc/cmdline on the board); the log is purged and the target
    // deleted when the lease ends.
    expect(text).toContain('iscsi_password=(hidden)');
    const secret = recorded(lease.id).iscsi!.chapSecret;
    const withSecret = text.split('\n').filter((l) => l.includes(secret));
    expect(withSecret.length).toBeGreaterThan(0);
    for (const l of withSecret) expect(l).toMatch(/^\s*\[\s*\d+\.\d+\] (Kernel command line:|Unknown kernel command line parameters)/);
  });

  it(
    'a file written on the board survives a power cycle',
    async () => {
      await sh('echo carol-was-here > /root/proof && sync && cat /root/proof', 'WROTE');
      const cycled = await api('POST', `/leases/${lease.id}/power`, { action: 'cycle' });
      expect(cycled.status, JSON.stringify(cycled.body)).toBe(202);
      await jobSucceeds(cycled.body.job.id);
      await bootedFromIscsi(lease, 'after power cycle');
      expect(await sh('cat /root/proof', 'PROOF')).toContain('carol-was-here');
    },
    JOB_MS,
  );

  it('the portal admits the board’s address alone: from the host even its initiator name with the lease’s secret gets nothing', async () => {
    const rec = recorded(lease.id).iscsi!;
    const boardIp = server.inventory.get(lease.boardId!).ip;
    const chap = { user: rec.chapUser, secret: rec.chapSecret };
    expect(rec.initiatorAddress).toBe(boardIp);
    // Control: the target's ACL is the board's address, and the board's own session comes from it.
    const target = (await server.storage!.exporter.list()).find((t) => t.iqn === rec.iqn)!;
    expect(target.acl).toEqual([boardIp]);
    expect(target.sessions).toEqual([{ initiator: rec.initiator, ip: boardIp }]);
    // From the controller's own address (not a board's): discovery shows nothing, and a login is
    // refused by the ACL whatever the name, the board's included, even with the right secret.
    expect(iscsiLs(rec.portal, rec.initiator, chap)).toEqual({ ok: true, code: 0, out: '' });
    for (const name of [rec.initiator, 'iqn.2026-11.cloud.dozen:lab-2']) {
      expect([name, iscsiInq(rec.portal, rec.iqn, name, chap)]).toEqual([name, { ok: false, code: 10, out: `${TARGET_NOT_FOUND}\n` }]);
    }
    // (A wrong secret from the board's own address: test/e2e/isolation.test.ts, through a relay on the board.)
  });

  it(
    'tgtd killed with -9: it is back with the target within seconds and the board keeps writing',
    async () => {
      const daemon = server.storage!.daemon;
      const pid = daemon.pid!;
      const before = daemon.restarts.length;
      process.kill(pid, 'SIGKILL');
      // How fast is for `npm run bench` (bench/e2e-bounds.ts); here: that it comes back, and the board with it.
      const back = await restarted(daemon, before);
      expect(daemon.restarts.length, 'tgtd restarted').toBe(before + 1);
      expect(daemon.pid).not.toBe(pid);
      const rec = recorded(lease.id).iscsi!;
      expect((await server.storage!.exporter.list()).find((t) => t.iqn === rec.iqn)).toMatchObject({ tid: rec.tid, disk: rec.disk });
      // The board's iscsid logs in again; the write waits for it and then lands on the disk.
      const w0 = Date.now();
      const out = await sh('echo after-restart > /root/after && sync && cat /root/after /root/proof', 'AFTER', 120_000);
      expect(out).toContain('after-restart');
      expect(out).toContain('carol-was-here');
      const sessions = (await server.storage!.exporter.list()).find((t) => t.iqn === rec.iqn)!.sessions;
      expect(sessions.map((s) => s.initiator)).toEqual([rec.initiator]);
      console.log(`tgtd kill -9: targets back after ${back} ms (daemon: ${daemon.restarts.at(-1)!.downMs} ms); the board's write+sync then took ${Date.now() - w0} ms`);
    },
    JOB_MS,
  );

  it(
    'reimage: a fresh clone — the files are gone',
    async () => {
      const re = await api('POST', `/leases/${lease.id}/reimage`, {});
      expect(re.status, JSON.stringify(re.body)).toBe(202);
      await bootedFromIscsi(lease, 'after reimage');
      await jobSucceeds(re.body.job.id);
      const out = await sh('ls /root; test -e /root/proof && echo PROOF-STILL-THERE || echo PROOF-GONE', 'REIMAGED');
      expect(out).toContain('PROOF-GONE');
      await sh('echo second-life > /root/proof && sync', 'WROTE2');
    },
    JOB_MS,
  );

  it(
    'release, then a new lease on the same board: its disk starts clean, the old disk and target are gone',
    async () => {
      const old = recorded(lease.id).iscsi!;
      const rel = await api('DELETE', `/leases/${lease.id}`);
      expect(rel.status).toBe(202);
      await jobSucceeds(rel.body.job.id);
      expect((await server.storage!.store.list()).map((d) => d.id)).not.toContain(lease.id);
      expect((await server.storage!.exporter.list()).map((t) => t.iqn)).not.toContain(old.iqn);

      const next = await api('POST', '/leases', { image: 'test' });
      expect(next.status, JSON.stringify(next.body)).toBe(202);
      const lease2: Lease = next.body.lease;
      expect(lease2.boardId).toBe('lab-1');
      await bootedFromIscsi(lease2, 'new lease');
      await jobSucceeds(next.body.job.id);
      const out = await sh('test -e /root/proof && echo PROOF-STILL-THERE || echo PROOF-ABSENT', 'NEWLEASE');
      expect(out).toContain('PROOF-ABSENT');
      expect(recorded(lease2.id).iscsi!.chapSecret).not.toBe(old.chapSecret);
      await jobSucceeds((await api('DELETE', `/leases/${lease2.id}`)).body.job.id);
    },
    JOB_MS * 2,
  );
});

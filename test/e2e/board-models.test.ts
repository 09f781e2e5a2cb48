/**
 * One lab board of each model beyond QEMU virt ARMv7 leases the multi-arch test image through the same API, with its
 * root on the lease's iSCSI disk, all real: a Banana Pi M2 Ultra (QEMU 10 `-M bpim2u`, Allwinner R40)
 * running Debian's u-boot-sunxi from its own SD card, which boots through pxelinux, Debian's armmp
 * kernel with the R40 device tree and the sunxi GMAC; and an ARMv8 board (QEMU virt, Cortex-A53) running
 * Debian's qemu_arm64 U-Boot, which boots through boot.scr.uimg into Debian's arm64 kernel.
 * What each booted through is read from the board's own TFTP fetches in its event history. The two boards
 * are two tenants', and the boot network's fences hold on both models: each, as root, spoofs the other.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pxelinuxName } from '../../src/boot/render.js';
import { REPO_ROOT } from '../../src/config.js';
import { Lab } from '../../src/lab/lab.js';
import { startServer, type RunningServer } from '../../src/server.js';
import type { Lease } from '../../src/store/schema.js';
import { iscsiLabConfig } from '../helpers/lab-server.js';
import { runOnConsole, sessionConsole, type TestConsole } from '../helpers/serial.js';
import { requireRoot, requireTools } from '../helpers/tools.js';
import { makeLoopFs, type LoopFs } from '../storage/loop-fs.js';

const BOOT_IP = '10.93.0.1';
/** From power-on to `login:` under TCG: SPL/U-Boot, TFTP, kernel, iSCSI login, the root's init. */
const BOOT_MS = 300_000;
const JOB_MS = 600_000;
let server: RunningServer;
let fs: LoopFs;
const tokens: Record<string, string> = {};
const work = mkdtempSync(join(tmpdir(), 'models-e2e-'));
const netns = `dzm-${randomBytes(3).toString('hex')}`;

/** The boards of this lab, in `--boards` order: what each must show, and whose lease it carries. */
const BOARDS: Array<{ id: string; tenant: string; model: string; arch: string; machine: string; tty: string; kernel: string; fdt?: string; route: 'pxe' | 'boot.scr' }> = [
  { id: 'lab-1', tenant: 'dora', model: 'bananapi-m2u', arch: 'armv7', machine: 'armv7l', tty: '/dev/ttyS0', kernel: 'images/test/vmlinuz', fdt: 'images/test/dtbs/sun8i-r40-bananapi-m2-ultra.dtb', route: 'pxe' },
  { id: 'lab-2', tenant: 'erik', model: 'qemu-virt-arm64', arch: 'arm64', machine: 'aarch64', tty: '/dev/ttyAMA0', kernel: 'images/test/arm64/Image', fdt: undefined, route: 'boot.scr' },
];
/** An image file the server gives any enrolled board: a request that got through as the other board would be served. */
const ANY_BOARDS_FILE = 'images/test/dtbs/sun8i-r40-bananapi-m2-ultra.dtb';
const LAB = 'bpim2u:1,arm64:1';
const consoles = new Map<string, TestConsole>();
const leases = new Map<string, Lease>();

async function api(method: string, path: string, body: unknown, t: string) {
  const r = await fetch(`${server.apiUrl}/v1${path}`, { method, headers: { authorization: `Bearer ${t}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: r.status, body: (await r.json().catch(() => undefined)) as any };
}

async function jobSucceeds(jobId: string, boardId: string) {
  const job = await server.leases.settle(jobId);
  const events = () => server.events.list(boardId).map((e) => `${e.time} ${e.type} ${e.message}`).join('\n');
  expect([job.state, job.error ?? ''], events()).toEqual(['succeeded', '']);
}

/** Waits for the iSCSI root marker and the login prompt on the board's console, and logs in. */
async function bootedFromIscsi(b: (typeof BOARDS)[number], what: string) {
  const con = consoles.get(b.id)!;
  const m = await con.out.waitFor(/DOZEN-TEST-IMAGE ROOT=iscsi target=(\S+) dev=(\S+)\r?\n/, BOOT_MS, `${b.id} (${what}: iSCSI root marker)`);
  expect(m[1]).toBe(server.store.state.leases.find((l) => l.id === leases.get(b.id)!.id)!.iscsi!.iqn);
  await con.out.waitFor('login:', 60_000, `${b.id} (${what}: login prompt)`);
  await con.type('root\n');
  await con.out.waitFor('root@dozen:~# ', 30_000, `${b.id} (${what}: shell)`);
}

const sh = (b: (typeof BOARDS)[number], cmd: string, what: string) => runOnConsole(consoles.get(b.id)!, cmd, { what: `${b.id} (${what})` });

/** The board's TFTP fetches and refusals since `since`, from its event history. */
function tftpEvents(boardId: string, since: string) {
  return server.events
    .list(boardId)
    .filter((e) => e.time >= since && (e.type === 'tftp' || e.type === 'error') && typeof e.details?.path === 'string')
    .map((e) => ({ ok: e.type === 'tftp', path: String(e.details!.path) }));
}

beforeAll(async () => {
  requireRoot();
  requireTools('qemu-system-arm', 'qemu-system-aarch64', 'ip', 'mkimage', 'mkenvimage', 'mcopy', 'tgtd', 'tgtadm', 'mkfs.btrfs', 'losetup');
  execFileSync('bash', [join(REPO_ROOT, 'images/test/build.sh')], { stdio: 'ignore', timeout: 600_000 });
  fs = makeLoopFs('btrfs', 1024);
  server = await startServer(await iscsiLabConfig({ dataDir: join(work, 'data'), prefix: '10.93.0', boards: LAB, netns, storageDir: fs.dir, osTimeoutMs: BOOT_MS }));
  for (const b of BOARDS) consoles.set(b.id, sessionConsole(server.consoles, b.id));
  for (const b of BOARDS) tokens[b.tenant] = (await api('POST', '/tenants', { id: b.tenant, name: b.tenant }, server.adminToken)).body.token;
}, 900_000);

afterAll(async () => {
  for (const c of consoles.values()) await c.close();
  if (server) await server.stop({ labDown: true });
  else await new Lab({ netns, bootIp: BOOT_IP, subnet: '10.93.0.0/24', boards: LAB, memoryMb: 512, stateDir: join(work, 'data', 'lab') }).down();
  fs?.cleanup();
  rmSync(work, { recursive: true, force: true });
});

describe('a lab of several board models, leased through one API', () => {
  it('the boards are enrolled as their models, each with its own MAC', async () => {
    const boards = (await api('GET', '/boards', undefined, server.adminToken)).body as Array<{ id: string; model: string; arch: string; mac: string }>;
    expect(boards.map((b) => [b.id, b.model, b.arch])).toEqual(BOARDS.map((b) => [b.id, b.model, b.arch]));
    expect(new Set(boards.map((b) => b.mac)).size).toBe(BOARDS.length);
  });

  it(
    'a lease of the test image on each model boots it from an iSCSI root, to a shell on the model’s console',
    async () => {
      const started = new Date().toISOString();
      await Promise.all(
        BOARDS.map(async (b) => {
          const created = await api('POST', '/leases', { image: 'test', model: b.model }, tokens[b.tenant]!);
          expect(created.status, JSON.stringify(created.body)).toBe(202);
          expect(created.body.lease.boardId).toBe(b.id);
          leases.set(b.id, created.body.lease);
          await bootedFromIscsi(b, 'first boot');
          await jobSucceeds(created.body.job.id, b.id);
          // The console takes input: these answers come from a shell on the board's own serial device.
          const out = await sh(b, "uname -m; tty; awk '$2 == \"/\" {print $1}' /proc/mounts; grep -o 'console=[^ ]*' /proc/cmdline", 'identity');
          expect(out.split(/\r?\n/).filter(Boolean)).toEqual([b.machine, b.tty, '/dev/sda', `console=${b.tty.slice(5)},115200`]);
        }),
      );
      // What each board booted through, from its own TFTP fetches: its model's route, the other refused or absent.
      for (const b of BOARDS) {
        const got = tftpEvents(b.id, started);
        expect(got).toContainEqual({ ok: true, path: b.kernel });
        if (b.fdt) expect(got).toContainEqual({ ok: true, path: b.fdt });
        const cfg = pxelinuxName(server.inventory.get(b.id).mac);
        if (b.route === 'pxe') {
          expect(got).toContainEqual({ ok: true, path: cfg });
          expect(got).not.toContainEqual({ ok: true, path: 'boot.scr.uimg' });
        } else {
          expect(got).toContainEqual({ ok: true, path: 'boot.scr.uimg' });
          expect(got.filter((e) => e.ok && e.path.startsWith('pxelinux.cfg/'))).toEqual([]);
        }
      }
    },
    JOB_MS * 2,
  );

  it(
    'each board, as root, sending as the other tenant’s board reaches neither the controller nor that board; as itself it does',
    async () => {
      const ctlMac = readFileSync(`/sys/class/net/${server.lab!.hostIf}/address`, 'utf8').trim();
      const t0 = new Date().toISOString();
      await Promise.all(
        BOARDS.map(async (b) => {
          const other = BOARDS.find((o) => o !== b)!;
          const theirs = server.inventory.get(other.id).ip;
          // (busybox tftp deletes its local file when a GET fails: never point it at /dev/null.)
          const fetch = (timeout: number) => `timeout ${timeout} tftp -g -r ${ANY_BOARDS_FILE} -l /tmp/tftp.out ${BOOT_IP} && echo FETCHED || echo GOT-NOTHING; rm -f /tmp/tftp.out`;
          expect(await sh(b, `ping -c 2 -W 2 ${theirs} >/dev/null && echo REACHED || echo UNREACHED`, 'ping the other board')).toContain('UNREACHED');
          // The other board's address as a second address, the route to the controller from it, and the
          // controller's MAC pinned: the spoofed datagrams really leave the board.
          await sh(b, `ip addr add ${theirs}/32 dev eth0 && ip route replace ${BOOT_IP}/32 dev eth0 src ${theirs} && arp -s ${BOOT_IP} ${ctlMac}`, 'spoof on');
          const stolen = await runOnConsole(consoles.get(b.id)!, fetch(8), { what: `${b.id} (spoofed fetch)`, timeoutMs: 30_000 });
          await sh(b, `ip route del ${BOOT_IP}/32 dev eth0; ip addr del ${theirs}/32 dev eth0; arp -d ${BOOT_IP}`, 'spoof off');
          expect(stolen).toContain('GOT-NOTHING');
          // Marker: as itself, the same request arrives and is served.
          expect(await sh(b, fetch(20), 'fetch as itself')).toContain('FETCHED');
        }),
      );
      // The server saw each board's own fetch, and nothing from either under the other's address.
      for (const b of BOARDS) {
        const got = tftpEvents(b.id, t0).filter((e) => e.path === ANY_BOARDS_FILE);
        expect(got, b.id).toEqual([{ ok: true, path: ANY_BOARDS_FILE }]);
      }
    },
    JOB_MS,
  );

  it(
    'reimage gives each board a fresh disk; release frees the board and removes its disk',
    async () => {
      await Promise.all(
        BOARDS.map(async (b) => {
          const lease = leases.get(b.id)!;
          await sh(b, `echo ${b.model}-was-here > /root/proof && sync`, 'write');
          const re = await api('POST', `/leases/${lease.id}/reimage`, {}, tokens[b.tenant]!);
          expect(re.status, JSON.stringify(re.body)).toBe(202);
          await bootedFromIscsi(b, 'after reimage');
          await jobSucceeds(re.body.job.id, b.id);
          expect(await sh(b, 'test -e /root/proof && echo STILL-THERE || echo GONE', 'proof')).toContain('GONE');
          const rel = await api('DELETE', `/leases/${lease.id}`, undefined, tokens[b.tenant]!);
          await jobSucceeds(rel.body.job.id, b.id);
          expect(server.inventory.get(b.id).state).toBe('available');
          expect((await server.storage!.store.list()).map((d) => d.id)).not.toContain(lease.id);
        }),
      );
    },
    JOB_MS * 2,
  );
});

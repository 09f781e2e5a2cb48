/**
 * Tenant isolation on the lab's boot network, end to end: two tenants lease the two lab boards (the
 * `debian-12` image, iSCSI roots, our DHCP/TFTP/metadata, the `linux-bridge` network driver the lab gets
 * by default). Alice is root on lab-1 and attacks bob's lab-2 and the controller from it. Every attack
 * is shown to have got nothing by a marker sent after it on a path that is open (the marker arrives,
 * the attack did not), and both leases still work afterwards (ssh, console, reimage). The same attacks
 * at the bridge alone, with more tools, are in test/network/bridge-attacks.test.ts.
 *
 * The attacker's tools are the test's, not the image's: a static busybox (Debian's armhf
 * busybox-static) copied in over ssh to a tmpfs, first in the console shell's PATH. The commands run on
 * the serial console (as root, with a password the test sets over ssh), so an attack that cuts the
 * board off its network still reports what it got.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { connect } from 'node:net';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
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
import { AUTH_FAILURE, TARGET_NOT_FOUND } from '../storage/tgt-fixture.js';

const NET = '10.82.0';
const BOOT_IP = `${NET}.1`;
const IMAGE = 'debian-12';
/** An image file the server gives any enrolled board (a request that got through as lab-2 would be served). */
const DTB = `images/${IMAGE}/dtbs/sun7i-a20-bananapi.dtb`;
/** From power-on to a shell: U-Boot, TFTP, the armmp kernel, iSCSI root, systemd — two TCG boards on two cores. */
const BOOT_MS = 480_000;
const JOB_MS = 900_000;

let server: RunningServer;
let fs: LoopFs;
const work = mkdtempSync(join(tmpdir(), 'isolation-e2e-'));
const netns = `dzs-${randomBytes(3).toString('hex')}`;
const tokens: Record<string, string> = {};
const leases: Record<string, Lease> = {};
const cons: Record<string, TestConsole> = {};
const captures: ChildProcess[] = [];
const key = join(work, 'id');
/** root's console password, set over ssh at each login (the image ships root locked). */
const ROOT_PW = randomBytes(9).toString('hex');
let busybox = '';

async function api(method: string, path: string, body?: unknown, token = server.adminToken) {
  const r = await fetch(`${server.apiUrl}/v1${path}`, {
    method,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: r.status, body: (await r.json().catch(() => undefined)) as any };
}

const board = (id: string) => server.lab!.boards().find((b) => b.id === id)!;

/** ssh to a board as root with the tenant's key (async: the server runs in this process). */
function ssh(id: string, cmd: string, input?: Buffer): Promise<{ code: number; out: string }> {
  const args = ['-i', key, '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'ConnectTimeout=10', '-o', 'LogLevel=ERROR', `root@${board(id).ip}`, cmd];
  return new Promise((res) => {
    const p = execFile('ssh', args, { timeout: 120_000, maxBuffer: 1 << 20 }, (err, stdout, stderr) => res({ code: err ? Number((err as { code?: number }).code ?? -1) : 0, out: `${stdout}${stderr}` }));
    p.stdin!.end(input);
  });
}

/**
 * Waits for the board's login prompt and sshd (the lease's key), copies the attacker's busybox into
 * tmpfs, sets root's console password, and logs in as root on the console with busybox first in PATH.
 */
async function loggedIn(id: string, what: string): Promise<void> {
  const con = cons[id]!;
  await con.out.waitFor(/Linux version 6\./, BOOT_MS, `${id} (${what}: kernel)`);
  await con.out.waitFor(/login: /, BOOT_MS, `${id} (${what}: login prompt)`);
  // sshd may answer a moment after getty (poll, 180 s at most).
  let r = await ssh(id, 'true');
  for (const end = Date.now() + 180_000; r.code !== 0 && Date.now() < end; r = await ssh(id, 'true')) await new Promise((res) => setTimeout(res, 1000));
  expect(r, `${id} (${what}): ssh with the lease's key`).toMatchObject({ code: 0 });
  // A tmpfs of its own: /run and /dev/shm are noexec. Installed as `busybox`, the name its --install needs.
  const T = '/mnt/attack';
  r = await ssh(id, `mkdir -p ${T} && (mountpoint -q ${T} || mount -t tmpfs -o size=16m,mode=700 attack ${T}) && cat > ${T}/busybox && chmod 755 ${T}/busybox && mkdir -p ${T}/bin && ${T}/busybox --install -s ${T}/bin && echo root:${ROOT_PW} | chpasswd && echo TOOLS-READY`, readFileSync(busybox));
  expect(r.out, `${id} (${what}): tools copied in`).toContain('TOOLS-READY');
  await con.type('\n');
  await con.out.waitFor(/login: /, 60_000, `${id} (${what}: login prompt again)`);
  await con.type('root\n');
  await con.out.waitFor('Password:', 30_000, `${id} (${what}: password prompt)`);
  await con.type(`${ROOT_PW}\n`);
  await con.out.waitFor('# ', 60_000, `${id} (${what}: root shell)`);
  // Kernel messages (an iSCSI hiccup while an attack drops frames) would land inside the output.
  await sh(id, `export PATH=${T}/bin:$PATH; dmesg -n 1`);
}

/** Runs a shell command on a board as root: its output only (test/helpers/serial.ts). */
function sh(id: string, cmd: string, timeoutMs = 60_000): Promise<string> {
  return runOnConsole(cons[id]!, cmd, { what: id, timeoutMs });
}

/** tcpdump on the controller's side of the boot network, lines as they come. */
function capture(filter: string, where: { iface?: string; netns?: string } = {}): { lines: string[]; ready: Promise<void>; stop: () => void } {
  const args = ['-i', where.iface ?? server.lab!.hostIf, '-l', '-n', '-e', filter];
  const p = where.netns ? spawn('ip', ['netns', 'exec', where.netns, 'tcpdump', ...args], { stdio: ['ignore', 'pipe', 'pipe'] }) : spawn('tcpdump', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  captures.push(p);
  const lines: string[] = [];
  let buf = '';
  p.stdout.on('data', (d: Buffer) => {
    buf += d.toString();
    const parts = buf.split('\n');
    buf = parts.pop()!;
    lines.push(...parts);
  });
  const ready = new Promise<void>((res, rej) => {
    p.stderr.on('data', (d: Buffer) => /listening on/.test(d.toString()) && res());
    p.once('exit', (c) => rej(new Error(`tcpdump exited ${c}`)));
  });
  return { lines, ready, stop: () => p.kill('SIGTERM') };
}

/** From the controller (this host): a TCP hello from a board's listener, retried while it starts. */
async function hostHello(ip: string, port: number): Promise<string> {
  const t0 = Date.now();
  let last = '';
  for (;;) {
    const out = await new Promise<string>((res) => {
      const sock = connect({ host: ip, port, timeout: 5000 });
      let got = '';
      sock.on('data', (d) => (got += d.toString()));
      sock.on('end', () => res(got));
      sock.on('timeout', () => (sock.destroy(), res(`${got}(timeout)`)));
      sock.on('error', (e) => res(`${got}(${e.message})`));
    });
    if (out.includes('hello')) return out;
    last = out;
    if (Date.now() - t0 > 15_000) throw new Error(`no hello from ${ip}:${port} within 15 s; last: ${last}`);
    await new Promise((r) => setTimeout(r, 300));
  }
}

/**
 * A relay on a board (busybox nc, one connection at a time, until killed) from its port 3261 to the
 * iSCSI portal: a login made from this host through it reaches the controller from that board.
 */
async function startRelay(id: string, portal: string): Promise<void> {
  await sh(id, `(while true; do nc -l -p 3261 -e nc ${portal.replace(':', ' ')}; done >/dev/null 2>&1 & echo $! > /run/relay.pid)`);
}

/**
 * libiscsi's iscsi-inq from this host through a board's relay. Between two connections the relay's
 * listener is briefly gone (the loop starts the next nc): a connection that never got to a login is
 * tried again; a login answer (success or refusal) is returned.
 */
async function iscsiLoginVia(id: string, target: { iqn: string; initiator: string; chapUser: string; chapSecret: string }): Promise<{ code: number; out: string }> {
  const url = `iscsi://${target.chapUser}%${target.chapSecret}@${board(id).ip}:3261/${target.iqn}/1`;
  const once = () =>
    new Promise<{ code: number; out: string }>((res) =>
      execFile('iscsi-inq', ['-i', target.initiator, url], { timeout: 30_000 }, (err, stdout, stderr) =>
        res({ code: err ? Number((err as { code?: number }).code ?? -1) : 0, out: `${stdout}${stderr}` }),
      ),
    );
  let r = await once();
  for (let i = 0; i < 20 && /reconnect|connect to|Connection refused/i.test(r.out); i++) {
    await new Promise((res) => setTimeout(res, 500));
    r = await once();
  }
  return r;
}

async function until(what: string, cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

beforeAll(async () => {
  requireRoot();
  requireTools('qemu-system-arm', 'ip', 'nft', 'bridge', 'tcpdump', 'mkimage', 'tgtd', 'tgtadm', 'mkfs.btrfs', 'btrfs', 'losetup');
  requireTools('ssh', 'ssh-keygen', 'dpkg-deb', 'debootstrap');
  execFileSync('bash', [join(REPO_ROOT, `images/${IMAGE}/build.sh`)], { stdio: 'ignore', timeout: 1_500_000 });
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'tenant@isolation-e2e', '-f', key]);
  // The attacker's tools: Debian's static armhf busybox (the same cache the test image is built from).
  const deb = execFileSync('bash', [join(REPO_ROOT, 'images/lib/fetch-debs.sh'), '--arch', 'armhf', 'busybox-static'], { encoding: 'utf8', timeout: 600_000 }).trim().split('\n').pop()!;
  mkdirSync(join(work, 'bb'));
  execFileSync('dpkg-deb', ['-x', deb, join(work, 'bb')]);
  busybox = join(work, 'bb', 'bin', 'busybox');
  fs = makeLoopFs('btrfs', 1024);
  server = await startServer(await iscsiLabConfig({ dataDir: join(work, 'data'), prefix: NET, boards: 2, netns, storageDir: fs.dir, osTimeoutMs: BOOT_MS, image: IMAGE }));
  for (const id of ['lab-1', 'lab-2']) cons[id] = sessionConsole(server.consoles, id);
  for (const t of ['alice', 'bob']) tokens[t] = (await api('POST', '/tenants', { id: t, name: t })).body.token;
}, 1_800_000);

afterAll(async () => {
  for (const p of captures) p.kill('SIGKILL');
  if (server) await server.stop({ labDown: true });
  else await new Lab({ netns, bootIp: BOOT_IP, subnet: `${NET}.0/24`, boards: 2, memoryMb: 512, stateDir: join(work, 'data', 'lab') }).down();
  fs?.cleanup();
  rmSync(work, { recursive: true, force: true });
});

describe('two tenants on one boot network, one of them hostile', () => {
  it(
    'both boards boot their leases through the fenced network, and health says boards are isolated',
    async () => {
      expect((await api('GET', '/network')).body.problems).toEqual([]);
      const health = await api('GET', '/health', undefined, '');
      expect(health.body).toMatchObject({ boardIsolation: 'enforced', network: { driver: 'linux-bridge', problems: 0 } });
      expect((await api('GET', '/network', undefined, tokens.alice)).status).toBe(403); // the details are the admin's
      expect((await api('GET', '/network')).body).toMatchObject({ boardIsolation: 'enforced', problems: [], ports: [expect.objectContaining({ boardId: 'lab-1', port: 'tap1' }), expect.objectContaining({ boardId: 'lab-2', port: 'tap2' })] });
      const sshKeys = [readFileSync(`${key}.pub`, 'utf8').trim()];
      const a = await api('POST', '/leases', { image: IMAGE, board: 'lab-1', sshKeys }, tokens.alice);
      const b = await api('POST', '/leases', { image: IMAGE, board: 'lab-2', sshKeys }, tokens.bob);
      expect([a.status, b.status], JSON.stringify([a.body, b.body])).toEqual([202, 202]);
      leases.alice = a.body.lease;
      leases.bob = b.body.lease;
      await Promise.all([loggedIn('lab-1', 'first boot'), loggedIn('lab-2', 'first boot')]);
      for (const j of [a.body.job.id, b.body.job.id]) expect((await server.leases.settle(j)).state).toBe('succeeded');
      // bob's data on his disk, looked for again at the end
      expect((await ssh('lab-2', 'echo bob-secret-marker > /root/marker && sync && echo WROTE')).out).toContain('WROTE');
      // Each board is in its tenant's private network; nothing is out of place in the datapath.
      const st = await server.network.state();
      expect(st.problems).toEqual([]);
      expect(st.networks).toEqual([
        { id: 'tenant-alice', boards: ['lab-1'] },
        { id: 'tenant-bob', boards: ['lab-2'] },
      ]);
    },
    JOB_MS,
  );

  it('IP spoofing: lab-1 sending as lab-2 reaches nothing; its own boot script is closed once it has its kernel', async () => {
    const bobs = board('lab-2').ip;
    // (busybox tftp deletes its local file when a GET fails: never point it at /dev/null.)
    const fetch = (path: string, timeout = 20) => `timeout ${timeout} tftp -g -r ${path} -l /run/tftp.out ${BOOT_IP} && echo FETCHED || echo GOT-NOTHING; rm -f /run/tftp.out`;
    const ctlMac = readFileSync(`/sys/class/net/${server.lab!.hostIf}/address`, 'utf8').trim();
    expect(await sh('lab-1', fetch(DTB))).toContain('FETCHED');
    // Its own boot script (this boot's iSCSI secret and metadata token): closed since it fetched its kernel.
    expect(await sh('lab-1', fetch('boot.scr.uimg'))).toContain('GOT-NOTHING');
    const t0 = new Date().toISOString();
    // bob's address as a second address and the route to the controller from it; the controller's MAC
    // pinned, so no ARP is needed and the spoofed datagrams really leave the board.
    await sh('lab-1', `ip addr add ${bobs}/32 dev eth0 && ip route replace ${BOOT_IP}/32 dev eth0 src ${bobs} && arp -s ${BOOT_IP} ${ctlMac}`);
    const stolen = await sh('lab-1', fetch(DTB, 8), 30_000);
    const script = await sh('lab-1', fetch('boot.scr.uimg', 8), 30_000);
    await sh('lab-1', `ip route del ${BOOT_IP}/32 dev eth0; ip addr del ${bobs}/32 dev eth0; arp -d ${BOOT_IP}`);
    expect(stolen).toContain('GOT-NOTHING');
    expect(script).toContain('GOT-NOTHING');
    // Marker: as itself again, its fetch arrives and is served — and the server saw nothing from lab-2's address.
    expect(await sh('lab-1', fetch(DTB))).toContain('FETCHED');
    expect(server.events.list('lab-2').filter((e) => e.time >= t0 && (e.type === 'tftp' || e.type === 'error'))).toEqual([]);
    expect(server.events.list('lab-1').filter((e) => e.time >= t0 && e.type === 'tftp' && e.details?.path === DTB).length).toBeGreaterThan(0);
  });

  it('ARP poisoning: gratuitous ARP for the controller\'s and lab-2\'s addresses never reaches the controller', async () => {
    const mac1 = board('lab-1').mac;
    const [ctl, bobs, mine] = [BOOT_IP, board('lab-2').ip, board('lab-1').ip];
    /** ARP in which `ip` is the sender: a claim to be `ip`. */
    const claims = (ip: string) => new RegExp(`tell ${ip.replace(/\./g, '\\.')}(?![0-9])|${ip.replace(/\./g, '\\.')} is-at`);
    const cap = capture(`arp and ether src ${mac1}`);
    await cap.ready;
    // Root may send from any address (arping binds the claimed one).
    await sh('lab-1', `echo 1 > /proc/sys/net/ipv4/ip_nonlocal_bind; arping -U -c 2 -I eth0 -s ${ctl} ${ctl}; arping -U -c 2 -I eth0 -s ${bobs} ${bobs}; arping -A -c 2 -I eth0 -s ${bobs} ${ctl}`, 30_000);
    // Marker: lab-1's gratuitous ARP for its own address does arrive.
    await sh('lab-1', `arping -U -c 1 -I eth0 -s ${mine} ${mine}`, 30_000);
    await until("lab-1's own gratuitous ARP at the controller", () => cap.lines.some((l) => claims(mine).test(l)));
    cap.stop();
    expect(cap.lines.filter((l) => claims(ctl).test(l) || claims(bobs).test(l))).toEqual([]);
    // The controller still has lab-2 at lab-2's MAC.
    const neigh = execFileSync('ip', ['-j', 'neigh', 'show', bobs, 'dev', server.lab!.hostIf], { encoding: 'utf8' });
    for (const n of JSON.parse(neigh) as Array<{ lladdr?: string }>) if (n.lladdr) expect(n.lladdr).toBe(board('lab-2').mac);
    await sh('lab-1', 'echo 0 > /proc/sys/net/ipv4/ip_nonlocal_bind');
  });

  it('metadata and phone-home: lab-2\'s URL with its current token (as if stolen) gets nothing from lab-1, spoofed as lab-2 or not', async () => {
    const bob = () => server.store.state.leases.find((l) => l.id === leases.bob!.id)!;
    const port = Number(/:(\d+)\/m\//.exec(await sh('lab-1', 'cat /proc/cmdline'))![1]);
    const url = (l: Lease, file: string) => `http://${BOOT_IP}:${port}/m/${l.id}/${l.bootToken}/${file}`;
    // HTTP by hand over busybox nc (its static wget crashes resolving names); a 200 prints GOT and the body.
    const http = (method: string, u: string) => {
      const path = u.replace(/^http:\/\/[^/]+/, '');
      const body = method === 'POST' ? 'Content-Length: 3\\r\\nContent-Type: application/x-www-form-urlencoded\\r\\n\\r\\nx=1' : '\\r\\n';
      return `printf '${method} ${path} HTTP/1.0\\r\\n${body}' | timeout 8 nc ${BOOT_IP} ${port} > /run/md; grep -q '^HTTP/1.1 200' /run/md && echo GOT && cat /run/md || echo GOT-NOTHING; head -1 /run/md; rm -f /run/md`;
    };
    const get = (u: string) => http('GET', u);
    const post = (u: string) => http('POST', u);
    // As itself: the token and lease are right, the address is not lab-2's — 404.
    expect(await sh('lab-1', get(url(bob(), 'user-data')), 30_000)).toContain('GOT-NOTHING');
    expect(await sh('lab-1', post(url(bob(), 'phone-home')), 30_000)).toContain('GOT-NOTHING');
    // As lab-2 (its address, the controller's MAC pinned): the bridge drops it before the controller.
    const ctlMac = readFileSync(`/sys/class/net/${server.lab!.hostIf}/address`, 'utf8').trim();
    const bobs = board('lab-2').ip;
    await sh('lab-1', `ip addr add ${bobs}/32 dev eth0 && ip route replace ${BOOT_IP}/32 dev eth0 src ${bobs} && arp -s ${BOOT_IP} ${ctlMac}`);
    const spoofedGet = await sh('lab-1', get(url(bob(), 'user-data')), 30_000);
    const spoofedPost = await sh('lab-1', post(url(bob(), 'phone-home')), 30_000);
    await sh('lab-1', `ip route del ${BOOT_IP}/32 dev eth0; ip addr del ${bobs}/32 dev eth0; arp -d ${BOOT_IP}`);
    expect(spoofedGet).toContain('GOT-NOTHING');
    expect(spoofedPost).toContain('GOT-NOTHING');
    expect(spoofedGet).not.toContain('ssh_authorized_keys');
    // Marker: lab-1's own URL, from its own command line, is served.
    const mine = server.store.state.leases.find((l) => l.id === leases.alice!.id)!;
    expect(await sh('lab-1', get(url(mine, 'meta-data')), 30_000)).toContain(`instance-id: ${mine.id}`);
  });

  it('iSCSI: from lab-1, lab-2\'s initiator name and current CHAP secret (as if stolen) do not log in; lab-1\'s own target does', async () => {
    const rec = (id: string) => server.store.state.leases.find((l) => l.id === id)!.iscsi!;
    const bobs = rec(leases.bob!.id);
    await startRelay('lab-1', bobs.portal);
    // The target admits lab-2's address alone, so name and secret are not enough.
    const stolen = await iscsiLoginVia('lab-1', bobs);
    expect(stolen.out).not.toMatch(/DIRECT_ACCESS/);
    expect(stolen).toEqual({ code: 10, out: `${TARGET_NOT_FOUND}\n` });
    // A guessed secret, lab-1's own address: refused too.
    const mine = rec(leases.alice!.id);
    expect(await iscsiLoginVia('lab-1', { ...mine, initiator: 'iqn.2026-11.cloud.dozen:attacker', chapSecret: 'Guessed0123456789abcdef' })).toEqual({ code: 10, out: `${AUTH_FAILURE}\n` });
    // Marker: the same relay reaches lab-1's own target (another initiator name, so lab-1's root session is untouched).
    const own = await iscsiLoginVia('lab-1', { ...mine, initiator: 'iqn.2026-11.cloud.dozen:attacker' });
    expect(own.out).toMatch(/Peripheral Device Type:DIRECT_ACCESS/);
    await sh('lab-1', 'kill $(cat /run/relay.pid); killall nc; rm /run/relay.pid');
    expect(await sh('lab-1', 'echo still-alive')).toContain('still-alive');
  }, 180_000);

  it('no path from lab-1 to lab-2 (ping, TCP), while the controller reaches both', async () => {
    const bobs = board('lab-2').ip;
    await sh('lab-2', '(nc -l -p 7000 -e echo hello-from-lab-2 &)');
    // Control: the controller (this host) reaches lab-2's listener.
    expect(await hostHello(bobs, 7000)).toContain('hello-from-lab-2');
    await sh('lab-2', '(nc -l -p 7000 -e echo hello-from-lab-2 &)');
    // lab-1 knows lab-2's MAC (its frames really go out): the bridge is what stops them.
    await sh('lab-1', `arp -s ${bobs} ${board('lab-2').mac}`);
    expect(await sh('lab-1', `ping -c 2 -W 2 ${bobs} >/dev/null && echo REACHED || echo UNREACHED`, 30_000)).toContain('UNREACHED');
    expect(await sh('lab-1', `echo x | timeout 5 nc ${bobs} 7000 && echo CONNECTED || echo REFUSED-OR-DROPPED`, 30_000)).toContain('REFUSED-OR-DROPPED');
    await sh('lab-1', `arp -d ${bobs}`);
    // Marker: the listener lab-1 could not reach is still there, for the controller.
    expect(await hostHello(bobs, 7000)).toContain('hello-from-lab-2');
  }, 180_000);

  it('IPv6 link-local from lab-1 to lab-2 leaves lab-1 and never reaches lab-2', async () => {
    const [mac1, mac2] = [board('lab-1').mac, board('lab-2').mac];
    // lab-2's link-local address from its MAC (EUI-64): what an attacker on the segment would compute.
    const b = mac2.split(':').map((x) => parseInt(x, 16));
    const hex = (hi: number, lo: number) => ((hi << 8) | lo).toString(16);
    const ll2 = `fe80::${hex(b[0]! ^ 2, b[1]!)}:${hex(b[2]!, 0xff)}:${hex(0xfe, b[3]!)}:${hex(b[4]!, b[5]!)}`;
    const ns = server.lab!.o.netns;
    const sent = capture(`ip6 and ether src ${mac1}`, { iface: board('lab-1').port, netns: ns });
    const delivered = capture(`ip6 and ether src ${mac1}`, { iface: board('lab-2').port, netns: ns });
    await Promise.all([sent.ready, delivered.ready]);
    expect(await sh('lab-1', `ping6 -c 3 -W 2 ${ll2}%eth0 >/dev/null 2>&1 && echo REACHED || echo UNREACHED`, 30_000)).toContain('UNREACHED');
    // Marker: lab-1's IPv6 frames did leave it (on its own port), and none came out of lab-2's.
    await until("lab-1's IPv6 frames on its port", () => sent.lines.length > 0, 10_000);
    sent.stop();
    delivered.stop();
    expect(delivered.lines).toEqual([]);
  });

  it("promiscuous mode: lab-1 receives none of the controller's unicast to lab-2", async () => {
    const rx = async () => Number((await sh('lab-1', 'cat /sys/class/net/eth0/statistics/rx_packets')).trim());
    await sh('lab-1', 'ip link set eth0 promisc on');
    const ping = (ip: string) => new Promise<void>((res) => execFile('ping', ['-c', '200', '-i', '0.01', '-q', ip], { timeout: 30_000 }, () => res()));
    // 200 pings to lab-2: a port that saw them (flooding, a learned MAC moved) would count ~200 more frames.
    const before = await rx();
    await ping(board('lab-2').ip);
    const toOther = (await rx()) - before;
    // Control: the same to lab-1 itself is counted.
    const before2 = await rx();
    await ping(board('lab-1').ip);
    const toSelf = (await rx()) - before2;
    await sh('lab-1', 'ip link set eth0 promisc off');
    expect(toSelf).toBeGreaterThanOrEqual(200);
    // What lab-1 may get meanwhile: its own iSCSI and console traffic's replies, a few broadcasts.
    expect(toOther).toBeLessThan(toSelf / 4);
  }, 120_000);

  it("MAC and IP spoofing: lab-1 with lab-2's MAC and address reaches nothing, then works again as itself", async () => {
    const [mine, bobs] = [board('lab-1'), board('lab-2')];
    const ctlMac = readFileSync(`/sys/class/net/${server.lab!.hostIf}/address`, 'utf8').trim();
    const t0 = new Date().toISOString();
    // One line, so the board needs nothing from its (iSCSI) disk while its frames are dropped: busybox
    // is in memory. Its own address and MAC come back at the end of the same line.
    const out = await sh(
      'lab-1',
      `ip link set eth0 address ${bobs.mac} && ip addr add ${bobs.ip}/32 dev eth0 && ip route replace ${BOOT_IP}/32 dev eth0 src ${bobs.ip} && arp -s ${BOOT_IP} ${ctlMac}; ` +
        `timeout 8 tftp -g -r ${DTB} -l /run/spoof.out ${BOOT_IP} && echo SPOOF-FETCHED || echo SPOOF-GOT-NOTHING; ` +
        `ip route del ${BOOT_IP}/32 dev eth0; ip addr del ${bobs.ip}/32 dev eth0; arp -d ${BOOT_IP}; ip link set eth0 address ${mine.mac}; rm -f /run/spoof.out`,
      60_000,
    );
    expect(out).toContain('SPOOF-GOT-NOTHING');
    // Marker: as itself again it is served (its iSCSI root carried on too: the shell still answers).
    expect(await sh('lab-1', `tftp -g -r ${DTB} -l /run/own.out ${BOOT_IP} && echo FETCHED; rm -f /run/own.out`, 60_000)).toContain('FETCHED');
    expect(server.events.list('lab-2').filter((e) => e.time >= t0 && (e.type === 'tftp' || e.type === 'error'))).toEqual([]);
    // The bridge still has lab-2's MAC on lab-2's port only (lab-1's frames moved nothing).
    const fdb = execFileSync('ip', ['netns', 'exec', server.lab!.o.netns, 'bridge', 'fdb', 'show', 'br', server.lab!.networkSpec().bridge], { encoding: 'utf8' });
    const lines = fdb.split('\n').filter((l) => l.toLowerCase().startsWith(bobs.mac.toLowerCase()));
    expect(lines.every((l) => l.includes(`dev ${bobs.port} `))).toBe(true);
  }, 120_000);

  it("macvlan: a second interface on lab-1 with lab-2's MAC and address gets nothing, while eth0 carries on", async () => {
    const [mine, bobs] = [board('lab-1'), board('lab-2')];
    const ctlMac = readFileSync(`/sys/class/net/${server.lab!.hostIf}/address`, 'utf8').trim();
    const t0 = new Date().toISOString();
    // What leaves lab-1's port with lab-2's MAC: proof the spoofed frames were really sent.
    const sent = capture(`ether src ${bobs.mac}`, { iface: mine.port, netns: server.lab!.o.netns });
    await sent.ready;
    // iproute2's ip (busybox's cannot make a macvlan); the controller's MAC pinned on mv0, so no ARP is needed.
    const out = await sh(
      'lab-1',
      `I=$(PATH=/usr/sbin:/usr/bin:/sbin:/bin; command -v ip); $I link add link eth0 name mv0 address ${bobs.mac} type macvlan mode private && ` +
        `$I addr add ${bobs.ip}/32 dev mv0 && $I link set mv0 up && $I route replace ${BOOT_IP}/32 dev mv0 src ${bobs.ip} && ` +
        `$I neigh replace ${BOOT_IP} lladdr ${ctlMac} dev mv0 nud permanent && echo MACVLAN-UP; ` +
        `timeout 8 tftp -g -r ${DTB} -l /run/mv.out ${BOOT_IP} && echo SPOOF-FETCHED || echo SPOOF-GOT-NOTHING; rm -f /run/mv.out; $I link del mv0`,
      60_000,
    );
    await until("lab-2's MAC leaving lab-1's port", () => sent.lines.length > 0, 10_000);
    sent.stop();
    expect(out).toContain('MACVLAN-UP');
    expect(out).toContain('SPOOF-GOT-NOTHING');
    expect(server.events.list('lab-2').filter((e) => e.time >= t0 && (e.type === 'tftp' || e.type === 'error'))).toEqual([]);
    // Marker: eth0, as itself, is served all along.
    expect(await sh('lab-1', `tftp -g -r ${DTB} -l /run/own.out ${BOOT_IP} && echo FETCHED; rm -f /run/own.out`, 60_000)).toContain('FETCHED');
  }, 120_000);

  it(
    'rogue DHCP: lab-1 runs a DHCP server while lab-2 power-cycles; lab-2 boots from the controller as before',
    async () => {
      const mac1 = board('lab-1').mac;
      await sh('lab-1', `mkdir -p /var/lib/misc && printf 'start ${NET}.200\\nend ${NET}.210\\ninterface eth0\\nopt router ${board('lab-1').ip}\\nopt serverid ${board('lab-1').ip}\\nboot_file rogue.scr\\n' > /run/udhcpd.conf && (udhcpd -f /run/udhcpd.conf >/dev/null 2>&1 &)`);
      // What reaches lab-2: frames the bridge sends out of its port (tap2, in the lab's namespace).
      const cap = capture('udp port 67 or udp port 68', { iface: board('lab-2').port, netns: server.lab!.o.netns });
      await cap.ready;
      const t0 = new Date().toISOString();
      const cycled = await api('POST', `/leases/${leases.bob!.id}/power`, { action: 'cycle' }, tokens.bob);
      expect(cycled.status, JSON.stringify(cycled.body)).toBe(202);
      expect((await server.leases.settle(cycled.body.job.id)).state).toBe('succeeded');
      await loggedIn('lab-2', 'after power cycle');
      // lab-2 asked for DHCP and was answered by the controller (acked with its reserved address).
      const dhcp = server.events.list('lab-2').filter((e) => e.time >= t0 && e.type === 'dhcp');
      expect(dhcp.some((e) => e.details?.kind === 'ack' && e.details?.ip === board('lab-2').ip)).toBe(true);
      expect(await sh('lab-2', "ip -4 -o addr show dev eth0 | awk '{print $4}'")).toContain(`${board('lab-2').ip}/24`);
      // Marker: lab-1's legitimate traffic to the controller arrives; its DHCP server's packets never did.
      expect(await sh('lab-1', `tftp -g -r ${DTB} -l /dev/null ${BOOT_IP} && echo FETCHED`)).toContain('FETCHED');
      cap.stop();
      // The controller's offer reached lab-2; nothing from lab-1 did.
      const ctlMac = readFileSync(`/sys/class/net/${server.lab!.hostIf}/address`, 'utf8').trim();
      expect(cap.lines.some((l) => l.includes(ctlMac) && l.includes(`${BOOT_IP}.67 > `))).toBe(true);
      expect(cap.lines.filter((l) => l.includes(mac1) || l.includes(`${board('lab-1').ip}.67 > `))).toEqual([]);
      await sh('lab-1', 'killall udhcpd');
    },
    JOB_MS,
  );

  it(
    'both leases still work: ssh and consoles answer, bob\'s disk is his, a reboot and a reimage boot clean',
    async () => {
      expect(await sh('lab-1', 'echo alive-1')).toContain('alive-1');
      expect(await sh('lab-2', 'echo alive-2')).toContain('alive-2');
      expect((await ssh('lab-1', 'echo ssh-1')).out).toContain('ssh-1');
      expect((await ssh('lab-2', 'cat /root/marker; findmnt -no SOURCE /')).out.split('\n')).toEqual(['bob-secret-marker', '/dev/sda', '']);
      // A reboot from inside (no power call, same boot token): U-Boot's DHCP reopens the boot window.
      await cons['lab-1']!.type('reboot -f\n');
      await loggedIn('lab-1', 'after reboot -f');
      expect(await sh('lab-1', 'timeout 20 tftp -g -r boot.scr.uimg -l /run/s ' + BOOT_IP + ' && echo FETCHED || echo GOT-NOTHING; rm -f /run/s')).toContain('GOT-NOTHING');
      const ra = await api('POST', `/leases/${leases.alice!.id}/reimage`, {}, tokens.alice);
      expect(ra.status, JSON.stringify(ra.body)).toBe(202);
      await loggedIn('lab-1', 'after reimage');
      expect((await server.leases.settle(ra.body.job.id)).state).toBe('succeeded');
      // A fresh disk from the image, still reachable over ssh with the lease's key; bob's is untouched.
      expect((await ssh('lab-1', 'ls /root/marker 2>&1; findmnt -no SOURCE /')).out).toMatch(/No such file[\s\S]*\/dev\/sda/);
      expect((await ssh('lab-2', 'cat /root/marker')).out).toBe('bob-secret-marker\n');
      for (const [t, l] of Object.entries(leases)) {
        const rel = await api('DELETE', `/leases/${l!.id}`, undefined, tokens[t]);
        expect((await server.leases.settle(rel.body.job.id)).state).toBe('succeeded');
      }
      // Released: both boards left their tenants' networks.
      expect((await server.network.state()).networks).toEqual([]);
    },
    JOB_MS,
  );
});

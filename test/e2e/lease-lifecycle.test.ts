import { startLabServer } from '../helpers/lab-server.js';
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../../src/config.js';
import { type RunningServer } from '../../src/server.js';
import { makeLoopFs, type LoopFs } from '../storage/loop-fs.js';
import { freeControlPort } from '../storage/tgt-fixture.js';
import { requireRoot, requireTools } from '../helpers/tools.js';
import { until } from '../helpers/until.js';

// The whole product on one emulated board: tenant A leases it with an SSH key → Debian 12 boots
// with its root on a per-lease iSCSI disk → A logs in over ssh and writes a file → reimage → the
// file is gone → release → the board is available and its disk and target are gone.
const JOB_TIMEOUT = 900_000;
let server: RunningServer;
let fs: LoopFs;
let tokenA = '';
const work = mkdtempSync(join(tmpdir(), 'lease-e2e-'));
const key = join(work, 'id_ed25519');

beforeAll(async () => {
  requireRoot();
  requireTools('qemu-system-arm', 'tgtd', 'tgtadm', 'ssh', 'ssh-keygen', 'mkfs.btrfs', 'debootstrap');
  // The lab enrols its boards with the test image; the lease boots debian-12. Both built here: no file may
  // count on another having built them.
  execFileSync('bash', [join(REPO_ROOT, 'images/test/build.sh')], { stdio: 'ignore', timeout: 600_000 });
  execFileSync('bash', [join(REPO_ROOT, 'images/debian-12/build.sh')], { stdio: 'ignore', timeout: 1_500_000 });
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
  fs = makeLoopFs('btrfs', 4096);
  server = await startLabServer({
    net: 86,
    prefix: 'dzs',
    extra: {
      dataDir: join(work, 'data'),
      storage: { enabled: true, dir: fs.dir, tgt: { controlPort: freeControlPort() } },
      leases: { osTimeoutMs: 600_000 },
    },
  });
  tokenA = (await api('POST', '/tenants', { id: 'alice', name: 'Alice' })).body.token;
  server.consoles.get('lab-1')!.on('data', (d: Buffer) => (consoleText = (consoleText + d.toString()).slice(-200_000)));
}, 1_800_000);

afterAll(async () => {
  await server?.stop({ labDown: true });
  fs?.cleanup();
});

async function api(method: string, path: string, body?: unknown, token = server.adminToken) {
  const r = await fetch(`${server.apiUrl}/v1${path}`, { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: r.status, body: (await r.json().catch(() => undefined)) as any };
}

let consoleText = '';

/** GET /metrics as the operator, as `name{labels}` → value. */
async function scrape(): Promise<Map<string, number>> {
  const r = await fetch(`${server.apiUrl}/metrics`, { headers: { authorization: `Bearer ${server.adminToken}` } });
  expect(r.status).toBe(200);
  expect(r.headers.get('content-type')).toMatch(/^text\/plain/);
  const m = new Map<string, number>();
  for (const line of (await r.text()).split('\n')) {
    const hit = /^([a-z_]+(?:\{[^}]*\})?) (\S+)$/.exec(line);
    if (hit) m.set(hit[1]!, Number(hit[2]));
  }
  return m;
}

async function jobEnds(jobId: string) {
  const job = await server.leases.settle(jobId);
  if (job.state !== 'succeeded') {
    const lease = server.store.state.leases.find((l) => l.id === job.leaseId)!;
    const events = server.events.list(lease.boardId!).map((e) => `${e.time} ${e.type} ${e.message}`);
    throw new Error(`job ${job.kind} failed: ${job.error}\nboard events:\n${events.join('\n')}\nconsole tail:\n${consoleText.slice(-3000)}`);
  }
  return job;
}

function ssh(ip: string, command: string): { code: number | null; out: string } {
  const r = spawnSync('ssh', ['-i', key, '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=10', `root@${ip}`, command], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, out: (r.stdout ?? '') + (r.stderr ?? '') };
}

/** sshd may come up a moment after the phone-home: waits for it to let us in, up to `timeoutMs`. */
async function sshRetry(ip: string, command: string, timeoutMs = 180_000) {
  let last = { code: null as number | null, out: '' };
  return until(`ssh ${ip} '${command}' succeeding`, () => ((last = ssh(ip, command)).code === 0 ? last : undefined), {
    timeoutMs,
    intervalMs: 500,
    detail: () => `${last.out}\nconsole tail:\n${consoleText.slice(-2000)}`,
  });
}

describe('a tenant’s whole lease of a board', () => {
  it(
    'lease with an SSH key → iSCSI root → ssh → write → reimage → gone → release → board available, disk and target gone',
    async () => {
      const pub = readFileSync(`${key}.pub`, 'utf8').trim();
      const created = await api('POST', '/leases', { image: 'debian-12', sshKeys: [pub], hostname: 'alice-bpi' }, tokenA);
      expect(created.status).toBe(202);
      const { lease, job } = created.body;
      await jobEnds(job.id);
      const shown = (await api('GET', `/leases/${lease.id}`, undefined, tokenA)).body;
      expect(shown.state).toBe('active');
      expect(shown.iscsi.chapSecret).toBe('(hidden)');
      const ip = server.inventory.get(lease.boardId).ip;
      // The operator's scrape after a lease came up: the boot it took is counted (README "Metrics").
      const m = await scrape();
      expect(m.get('dozen_dhcp_replies_total{type="ack"}'), 'DHCP acks').toBeGreaterThan(0);
      expect(m.get('dozen_tftp_transfers_total{result="ok"}'), 'TFTP transfers').toBeGreaterThanOrEqual(3);
      expect(m.get('dozen_tftp_bytes_total'), 'TFTP bytes').toBeGreaterThan(1_000_000);
      expect(m.get('dozen_leases{kind="board",state="active"}')).toBe(1);
      expect(m.get('dozen_iscsi_targets')).toBe(1);
      expect(m.get(`dozen_boards{state="active"}`)).toBe(1);
      expect(m.get('dozen_job_step_seconds_count{kind="provision",step="phone-home",outcome="done"}'), [...m.keys()].filter((k) => k.startsWith('dozen_job')).join(' ')).toBe(1);
      expect(m.get('dozen_jobs_total{kind="provision",outcome="succeeded"}')).toBe(1);
      // Only operators read it: a tenant's token is refused, and so is no token.
      expect((await fetch(`${server.apiUrl}/metrics`, { headers: { authorization: `Bearer ${tokenA}` } })).status).toBe(403);
      expect((await fetch(`${server.apiUrl}/metrics`)).status).toBe(401);

      const first = await sshRetry(ip, 'hostname; findmnt -n -o SOURCE /; echo A-WAS-HERE > /root/proof && sync && cat /root/proof');
      expect(first.out).toMatch(/alice-bpi/);
      expect(first.out).toMatch(/\/dev\/sd/); // root is the iSCSI LUN
      expect(first.out).toMatch(/A-WAS-HERE/);

      // The same board through the controller's SSH gateway, as a tenant outside the boot network reaches
      // it (README "SSH gateway"): with the lease's key it gets in; with another key it gets nothing.
      const gw = `${lease.id}@127.0.0.1`;
      // Asynchronous: the gateway runs in this process, and a blocking ssh would stall it.
      const jump = (k: string) =>
        new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) =>
          execFile('ssh', ['-i', k, '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=10',
            '-o', `ProxyCommand=ssh -i ${k} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -p ${server.gateway!.port} -W %h:%p ${gw}`, `root@${ip}`, 'hostname'],
            { encoding: 'utf8', timeout: 60_000 }, (err, stdout, stderr) => resolve({ status: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr })),
        );
      const through = await jump(key);
      expect([through.status, through.stdout.trim()], through.stderr).toEqual([0, 'alice-bpi']);
      execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(work, 'other')]);
      const stranger = await jump(join(work, 'other'));
      expect(stranger.status).not.toBe(0);
      expect(stranger.stderr).toMatch(/Permission denied \(publickey\)/);

      const re = await api('POST', `/leases/${lease.id}/reimage`, {}, tokenA);
      expect(re.status).toBe(202);
      await jobEnds(re.body.job.id);
      const after = await sshRetry(ip, 'test -e /root/proof && echo STILL-THERE || echo GONE');
      expect(after.out).toMatch(/GONE/);

      const rel = await api('DELETE', `/leases/${lease.id}`, undefined, tokenA);
      await jobEnds(rel.body.job.id);
      expect((await api('GET', `/boards/${lease.boardId}`)).body.state).toBe('available');
      const disks = await server.storage!.store.list();
      expect(disks.map((d) => d.id).filter((id) => id.includes(lease.id))).toEqual([]);
      const targets = execFileSync('tgtadm', ['-C', String(server.config.storage.tgt.controlPort), '--lld', 'iscsi', '--mode', 'target', '--op', 'show'], { encoding: 'utf8' });
      expect(targets).not.toContain(lease.id);
      const end = await scrape();
      expect([end.get('dozen_leases{kind="board",state="active"}'), end.get('dozen_iscsi_targets'), end.get('dozen_jobs_total{kind="reimage",outcome="succeeded"}'), end.get('dozen_jobs_total{kind="release",outcome="succeeded"}')]).toEqual([0, 0, 1, 1]);
    },
    JOB_TIMEOUT * 3,
  );
});

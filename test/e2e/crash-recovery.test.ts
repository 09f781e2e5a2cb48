import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../../src/config.js';
import { Lab } from '../../src/lab/lab.js';
import { buildLabImage } from '../helpers/lab-server.js';
import { requireRoot, requireTools } from '../helpers/tools.js';
import { until } from '../helpers/until.js';
import { makeLoopFs } from '../storage/loop-fs.js';
import { freeControlPort, freePort } from '../storage/tgt-fixture.js';

// kill -9 of the server in the middle of provisioning: on restart the job resumes from the step it
// was in, the lease ends active, and what reconciliation did is logged.
const dir = mkdtempSync(join(tmpdir(), 'crash-'));
const ADMIN = randomBytes(16).toString('hex');
const netns = `dzk-${randomBytes(3).toString('hex')}`;
// Checked free (bound, then released) rather than drawn at random: the server binds it again on restart.
const port = await freePort();
const fs = makeLoopFs('btrfs', 1024);
const controlPort = freeControlPort();
const config = {
  dataDir: join(dir, 'data'),
  api: `127.0.0.1:${port}`,
  bootIp: '10.85.0.1',
  subnet: '10.85.0.0/24',
  metadata: { port: await freePort('0.0.0.0') }, // free on every address: it binds the lab's boot IP
  gateway: { listen: '127.0.0.1:0' },
  lab: { enabled: true, boards: 1, netns, powerOn: false },
  leases: { bootTimeoutMs: 60_000, osTimeoutMs: 180_000 },
  storage: { enabled: true, dir: fs.dir, tgt: { controlPort } },
};
let server: ChildProcess | undefined;
let logs = '';

function start(): Promise<void> {
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
  server = spawn(join(REPO_ROOT, 'bin/dozen'), ['serve', '--config', join(dir, 'config.json')], { env: { ...process.env, DOZEN_ADMIN_TOKEN: ADMIN, LOG_LEVEL: 'info' }, stdio: ['ignore', 'pipe', 'pipe'] });
  server.stdout!.on('data', (d) => (logs += d));
  server.stderr!.on('data', (d) => (logs += d));
  // Polls its health endpoint (the interval is a poll, not a wait for something); 240 s at most.
  return untilLogged('server answers /v1/health', async () => {
    if (server!.exitCode !== null) throw new Error(`server exited: ${logs.slice(-2000)}`);
    return (await fetch(`http://127.0.0.1:${port}/v1/health`).then((r) => r.ok, () => false)) ? true : undefined;
  }, 240_000).then(() => undefined);
}

async function api(method: string, path: string, body?: unknown, token = ADMIN) {
  const r = await fetch(`http://127.0.0.1:${port}/v1${path}`, { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: r.status, body: (await r.json().catch(() => undefined)) as any };
}

function showTargets(): string {
  return spawnSync('tgtadm', ['-C', String(controlPort), '--lld', 'iscsi', '--mode', 'target', '--op', 'show'], { encoding: 'utf8' }).stdout;
}

/** Polls every 200 ms; a failure shows the server's log tail. */
function untilLogged<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs: number) {
  return until(what, fn, { timeoutMs, intervalMs: 200, detail: () => `server log tail: ${logs.slice(-1500)}` });
}

beforeAll(async () => {
  requireRoot();
  requireTools('qemu-system-arm', 'ip');
  buildLabImage('test'); // the lab's boards are enrolled with it
  await start();
}, 900_000);

afterAll(async () => {
  server?.kill('SIGKILL');
  spawnSync('pkill', ['-9', '-f', `tgtd.*-C ${controlPort}`]);
  fs.cleanup();
  await new Lab({ netns, boards: 1, memoryMb: 512, bootIp: config.bootIp, subnet: config.subnet, stateDir: join(config.dataDir, 'lab') }).down();
});

describe('server killed with -9 mid-provision', () => {
  it('resumes the job after restart; the lease becomes active; reconciliation is logged', async () => {
    const tenant = (await api('POST', '/tenants', { id: 'alice', name: 'Alice' })).body.token;
    const { lease, job } = (await api('POST', '/leases', { image: 'test' }, tenant)).body;
    // wait until the board is booting (the job waits for its DHCP request or kernel fetch)
    await untilLogged('job reaches a boot step', async () => {
      const j = (await api('GET', `/jobs/${job.id}`, undefined, tenant)).body;
      return j.steps.some((s: any) => ['dhcp', 'kernel'].includes(s.name) && s.state === 'running') ? j : undefined;
    }, 60_000);
    server!.kill('SIGKILL');
    await new Promise((r) => server!.once('exit', r));
    logs = '';
    await start();
    expect(logs).toMatch(new RegExp(`reconcile: job ${job.id} \\(provision of lease ${lease.id}\\) resumed at step (dhcp|kernel|root)`));
    // The lease's disk and target survived the crash and are the ones the board boots from. Polled: the
    // resumed boot step first power-cycles the board, and a new boot re-makes the target with new CHAP
    // secrets (remove, then create), so right after the restart it may be absent for a moment.
    await untilLogged('the lease target is exported again', async () => (showTargets().includes(lease.id) ? true : undefined), 60_000);
    const done = await untilLogged('job ends', async () => {
      const j = (await api('GET', `/jobs/${job.id}`, undefined, tenant)).body;
      return j.state === 'running' ? undefined : j;
    }, 400_000);
    expect(done.error ?? '').toBe('');
    expect(done.state).toBe('succeeded');
    // The job's end and the lease's `active` are two store writes, one right after the other: a read
    // between them (seen once in a fresh-clone run) finds the lease still provisioning.
    await untilLogged('the lease is active', async () => ((await api('GET', `/leases/${lease.id}`, undefined, tenant)).body.state === 'active' ? true : undefined), 10_000);
    expect((await api('GET', '/boards/lab-1')).body.state).toBe('active');
    // and it releases cleanly afterwards
    const rel = (await api('DELETE', `/leases/${lease.id}`, undefined, tenant)).body;
    await untilLogged('release ends', async () => ((await api('GET', `/jobs/${rel.job.id}`, undefined, tenant)).body.state === 'succeeded' ? true : undefined), 60_000);
    expect((await api('GET', '/boards/lab-1')).body.state).toBe('available');
    // no orphan disk or target
    expect(readdirSync(fs.dir).filter((f) => f.includes(lease.id))).toEqual([]);
    expect(showTargets()).not.toContain(lease.id);
  }, 600_000);
});

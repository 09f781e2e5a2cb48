import { execFile, execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../../src/config.js';
import { manualDesk } from '../../src/power/manual.js';
import { ADMIN, apiHarness } from '../helpers/api-harness.js';
import { until } from '../helpers/until.js';

// The real `dozen` command against a real API server.
let h: Awaited<ReturnType<typeof apiHarness>>;
const dir = mkdtempSync(join(tmpdir(), 'cli-'));
const env = { ...process.env, DOZEN_LOGIN_FILE: join(dir, 'login.json'), DOZEN_URL: '', DOZEN_TOKEN: '' };

function dozen(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(join(REPO_ROOT, 'bin/dozen'), args, { env, timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

beforeAll(async () => {
  h = await apiHarness({ timeouts: { actionMs: 2000, bootMs: 200, osMs: 200 } });
});
afterAll(() => h.close());

describe('dozen CLI', () => {
  const url = () => h.base.replace(/\/v1$/, '');

  it('logs in (saving the token 0600), enrolls a board and lists it', async () => {
    const login = await dozen('login', '--url', url(), '--token', ADMIN);
    expect(login.stdout).toMatch(/logged in to .* as admin/);
    expect(statSync(env.DOZEN_LOGIN_FILE).mode & 0o777).toBe(0o600);
    const add = await dozen('boards', 'add', 'bpi-01', '--mac', '02:00:00:00:02:01', '--ip', '10.77.0.121', '--image', 'test', '--power', '{"driver":"command","on":"true","off":"true","cycle":"true"}', '--json');
    expect(add.code).toBe(0);
    expect(JSON.parse(add.stdout)).toMatchObject({ id: 'bpi-01', state: 'available' });
    const ls = await dozen('boards', 'ls');
    expect(ls.stdout).toMatch(/^ID\s+MODEL\s+ARCH/);
    expect(ls.stdout).toMatch(/bpi-01\s+bananapi\s+armv7\s+02:00:00:00:02:01/);
  });

  it('a tenant creates a lease and sees its job’s steps live; a failed job exits non-zero', async () => {
    const t = (await h.api('POST', '/tenants', { id: 'cli-tenant', name: 'CLI' })).body.token;
    const key = join(dir, 'id.pub');
    writeFileSync(key, 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me\n');
    const r = await dozen('lease', 'create', '--image', 'test', '--ssh-key', key, '--token', t, '--url', url(), '--json');
    expect(r.code).toBe(1); // this board never boots: the job fails at dhcp
    const out = JSON.parse(r.stdout);
    expect(out.lease).toMatchObject({ boardId: 'bpi-01', state: 'error', sshKeys: [expect.stringMatching(/^ssh-ed25519 /)] });
    expect(out.job.steps.find((s: { name: string }) => s.name === 'dhcp').state).toBe('failed');
    const human = await dozen('lease', 'release', out.lease.id, '--token', t, '--url', url());
    expect(human.stderr).toMatch(/✓ power-off[\s\S]*✓ board/);
    expect(human.stdout).toMatch(new RegExp(`lease ${out.lease.id}: released`));
    const ls = await dozen('lease', 'ls', '--token', t, '--url', url(), '--json');
    expect(JSON.parse(ls.stdout).map((l: { state: string }) => l.state)).toEqual(['released']);
  });

  it('power is a job the CLI follows like reimage; `dozen job cancel` stops one no operator confirms', async () => {
    const t = (await h.api('POST', '/tenants', { id: 'cli-power', name: 'CLI power' })).body.token;
    const as = ['--token', t, '--url', url()];
    // a board with a command driver: the job runs to its end
    const made = JSON.parse((await dozen('lease', 'create', '--image', 'test', '--board', 'bpi-01', '--no-wait', '--json', ...as)).stdout);
    await h.leases.settle(made.job.id);
    const power = await dozen('lease', 'power', made.lease.id, 'cycle', ...as);
    expect([power.code, power.stdout.trim()]).toEqual([0, `lease ${made.lease.id}: power cycle succeeded`]);
    expect(power.stderr).toMatch(/power cycle, job j-[0-9a-f]{10}[\s\S]*✓ power/);
    // only power jobs are cancelled
    const refused = await dozen('job', 'cancel', made.job.id, ...as);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/409: job j-[0-9a-f]{10} has already ended \(failed\)/);
    await h.leases.settle((await h.leases.release('system', made.lease.id)).job.id);

    // a board with manual power: the power job waits for an operator until cancelled
    expect((await h.api('POST', '/boards', { id: 'bpi-02', mac: '02:00:00:00:02:02', model: 'bananapi', arch: 'armv7', ip: '10.77.0.122', image: 'test', power: { driver: 'manual' } })).status).toBe(201);
    const m = JSON.parse((await dozen('lease', 'create', '--image', 'test', '--board', 'bpi-02', '--no-wait', '--json', ...as)).stdout);
    const provision = h.leases.settle(m.job.id);
    let ended = false;
    void provision.finally(() => (ended = true));
    await until(`provision job ${m.job.id} ending while the operator confirms`, () => {
      if (ended) return true;
      manualDesk.confirm('bpi-02'); // play the operator for the provision's power cycles
      return false;
    }, { timeoutMs: 30_000, intervalMs: 10 });
    const started = await dozen('lease', 'power', m.lease.id, 'on', '--no-wait', '--json', ...as);
    expect(started.code).toBe(0);
    const job = JSON.parse(started.stdout).job;
    expect(job).toMatchObject({ kind: 'power', state: 'running' });
    await until('the manual desk to ask for bpi-02', () => manualDesk.waiting('bpi-02').length > 0, { timeoutMs: 10_000, intervalMs: 10 });
    const cancelled = await dozen('job', 'cancel', job.id, ...as);
    expect([cancelled.code, cancelled.stdout.trim()]).toEqual([0, `job ${job.id}: failed (power cancelled)`]);
    expect(manualDesk.waiting('bpi-02')).toEqual([]);
    expect((await h.api('GET', `/jobs/${job.id}`)).body.error).toBe('power: cancelled: by tenant cli-power');
  });

  it('imports an image from a path on the server and by upload, showing progress; a bad checksum fails', async () => {
    // test data: an ext4 root holding /boot/vmlinuz (just the ARM zImage magic), made without mounting
    const src = mkdtempSync(join(dir, 'root-'));
    mkdirSync(join(src, 'boot'));
    const k = Buffer.alloc(256 * 1024, 0x5a);
    k.writeUInt32LE(0x016f2818, 0x24);
    writeFileSync(join(src, 'boot', 'vmlinuz'), k);
    const disk = join(dir, 'root.img');
    execFileSync('mke2fs', ['-q', '-F', '-t', 'ext4', '-d', src, disk, '16M']);
    execFileSync('xz', ['-k', '-T1', '-0', disk]);

    const byPath = await dozen('images', 'import', disk, '--name', 'cli-path', '--kernel', join(src, 'boot', 'vmlinuz'));
    expect([byPath.code, byPath.stdout.trim()]).toEqual([0, 'imported cli-path (armv7)']);
    const up = await dozen('images', 'import', `${disk}.xz`, '--name', 'cli-upload', '--upload', '--kernel', join(src, 'boot', 'vmlinuz'));
    expect(up.stdout.trim()).toBe('imported cli-upload (armv7)');
    expect(up.stderr).toMatch(/receive|expand|install/);
    const ls = await dozen('images', 'ls', '--json');
    expect(JSON.parse(ls.stdout).map((i: { name: string }) => i.name)).toEqual(expect.arrayContaining(['cli-path', 'cli-upload', 'test']));
    const bad = await dozen('images', 'import', disk, '--name', 'cli-bad', '--sha256', '0'.repeat(64), '--kernel', join(src, 'boot', 'vmlinuz'));
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/sha256|checksum/i);
  });

  it('errors are clear and exit non-zero', async () => {
    const r = await dozen('lease', 'show', 'l-nope');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/dozen: 404: lease l-nope not found/);
    const bad = await dozen('boards', 'add', 'x', '--mac', 'nope', '--ip', '10.77.0.5', '--image', 'test');
    expect(bad.stderr).toMatch(/400: invalid request: mac: must be a MAC address/);
  });
});

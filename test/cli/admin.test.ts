import { execFile, execFileSync, spawn } from 'node:child_process';
import { chmodSync, createReadStream, mkdirSync, mkdtempSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../../src/config.js';
import { ADMIN, apiHarness } from '../helpers/api-harness.js';
import { until } from '../helpers/until.js';

// The real `dozen` command against a real API server: admin commands, lists, events, ssh, URL import.
let h: Awaited<ReturnType<typeof apiHarness>>;
const dir = mkdtempSync(join(tmpdir(), 'cli-admin-'));
const baseEnv = { ...process.env, DOZEN_LOGIN_FILE: join(dir, 'nobody.json'), DOZEN_URL: '', DOZEN_TOKEN: '', DOZEN_SSH_GATEWAY: '' };
const url = () => h.base.replace(/\/v1$/, '');

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}
function dozen(args: string[], env: Record<string, string | undefined> = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(join(REPO_ROOT, 'bin/dozen'), args, { env: { ...baseEnv, ...env }, timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}
/** As the admin, by flags (no saved login). */
const admin = (...args: string[]) => dozen([...args, '--url', url(), '--token', ADMIN]);
const as = (token: string, ...args: string[]) => dozen([...args, '--url', url(), '--token', token]);

beforeAll(async () => {
  h = await apiHarness({ timeouts: { actionMs: 2000, bootMs: 200, osMs: 200 } });
});
afterAll(() => h.close());

describe('tenants and tokens', () => {
  it('creates a tenant whose token is printed once and works; lists tenants as a table or raw JSON', async () => {
    const made = await admin('tenants', 'create', 'acme', '--name', 'Acme Corp');
    expect(made.code).toBe(0);
    expect(made.stdout).toMatch(/^created tenant acme \(Acme Corp\)\ntoken id: \S+\ntoken: +\S+\n$/);
    expect(made.stderr).toMatch(/shown only once/);
    const token = /^token: +(\S+)$/m.exec(made.stdout)![1]!;
    expect((await h.api('GET', '/whoami', undefined, token)).body).toMatchObject({ role: 'tenant', tenant: 'acme' });

    const ls = await admin('tenants', 'ls');
    expect(ls.stdout).toMatch(/^ID\s+NAME\s+CREATEDAT\n/); // no trailing blanks
    expect(ls.stdout).toMatch(/^acme\s+Acme Corp\s+\d{4}-/m);
    const raw = await admin('tenants', 'ls', '--json');
    expect(JSON.parse(raw.stdout)).toEqual((await h.api('GET', '/tenants')).body);

    const again = await admin('tenants', 'create', 'acme');
    expect([again.code, again.stderr.trim()]).toEqual([1, 'dozen: 409: tenant acme already exists']);
    const bad = await admin('tenants', 'create', 'Not_Valid');
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^dozen: 400: invalid request: id: lower-case letters/);
  });

  it('makes and revokes tokens', async () => {
    await h.api('POST', '/tenants', { id: 'tok', name: 'Tok' });
    const made = await admin('tokens', 'create', 'tok', '--expires', '2099-01-01T00:00:00Z');
    expect(made.code).toBe(0);
    expect(made.stdout).toMatch(/^new token for tenant tok\ntoken id: (\S+) {2}\(expires 2099-01-01T00:00:00.000Z\)\ntoken: +\S+\n$/);
    const id = /^token id: (\S+)/m.exec(made.stdout)![1]!;
    const token = /^token: +(\S+)$/m.exec(made.stdout)![1]!;
    expect((await h.api('GET', '/whoami', undefined, token)).body).toMatchObject({ tenant: 'tok', token: id });

    const revoked = await admin('tokens', 'revoke', id);
    expect([revoked.code, revoked.stdout.trim()]).toEqual([0, `revoked ${id}`]);
    expect((await h.api('GET', '/whoami', undefined, token)).status).toBe(401);
    const used = await as(token, 'lease', 'ls');
    expect(used.code).toBe(1);
    expect(used.stderr).toMatch(/^dozen: 401: /);
  });

  it('an unknown tenant or token is a clear error', async () => {
    const unknown = await admin('tokens', 'create', 'no-such-tenant');
    expect([unknown.code, unknown.stderr.trim()]).toEqual([1, 'dozen: 404: tenant no-such-tenant not found']);
    const gone = await admin('tokens', 'revoke', 'tk-nope');
    expect([gone.code, gone.stderr.trim()]).toEqual([1, 'dozen: 404: token tk-nope not found']);
    const json = await admin('tokens', 'create', 'tok', '--json');
    expect(Object.keys(JSON.parse(json.stdout)).sort()).toEqual(['token', 'tokenId']);
  });

  it('without a token the command says how to log in; a tenant token is refused admin commands', async () => {
    const none = await dozen(['tenants', 'ls']);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/^dozen: not logged in: run `dozen login/);
    const noToken = await dozen(['discovered', 'ls', '--url', url()]);
    expect([noToken.code, noToken.stderr]).toEqual([1, expect.stringMatching(/not logged in/)]);
    const t = (await h.api('POST', '/tenants', { id: 'plain', name: 'Plain' })).body.token;
    const refused = await as(t, 'tenants', 'create', 'evil');
    expect([refused.code, refused.stderr.trim()]).toEqual([1, 'dozen: 403: admin only']);
  });
});

describe('discovered MACs', () => {
  it('lists them, and enrols one as a board with the arch its DHCP request gave', async () => {
    await h.inventory.noteUnknown('02:00:00:00:09:01', { vendorClass: 'U-Boot.armv8', clientArch: 0x16 });
    await h.inventory.noteUnknown('02:00:00:00:09:02', { vendorClass: 'PXEClient' });
    const ls = await admin('discovered', 'ls');
    expect(ls.code).toBe(0);
    expect(ls.stdout).toMatch(/^MAC\s+ARCH\s+VENDORCLASS\s+COUNT/);
    expect(ls.stdout).toMatch(/^02:00:00:00:09:01\s+arm64\s+U-Boot\.armv8\s+1\s/m);
    expect(ls.stdout).toMatch(/^02:00:00:00:09:02\s+-\s+PXEClient\s+1\s/m);
    const raw = JSON.parse((await admin('discovered', 'ls', '--json')).stdout);
    expect(raw).toEqual((await h.api('GET', '/discovered')).body);
    expect(raw[0]).not.toHaveProperty('arch'); // raw API JSON, not the table's rows

    const power = '{"driver":"command","on":"true","off":"true","cycle":"true"}';
    const enrol = await admin('discovered', 'enrol', '02-00-00-00-09-01', '--id', 'disc-01', '--ip', '10.77.0.141', '--image', 'test', '--model', 'qemu-virt-arm64', '--power', power);
    expect([enrol.code, enrol.stdout.trim()]).toEqual([0, 'enrolled 02:00:00:00:09:01 as board disc-01 (qemu-virt-arm64, arm64, 10.77.0.141): available']);
    expect((await h.api('GET', '/boards/disc-01')).body).toMatchObject({ mac: '02:00:00:00:09:01', arch: 'arm64', power: { driver: 'command' } });
    expect((await h.api('GET', '/discovered')).body.map((d: { mac: string }) => d.mac)).toEqual(['02:00:00:00:09:02']);
  });

  it('refuses a bad MAC, a MAC never seen (unless --force), and bad board fields, saying why', async () => {
    await h.inventory.noteUnknown('02:00:00:00:09:02');
    const base = ['--id', 'disc-02', '--ip', '10.77.0.142', '--image', 'test'];
    const badMac = await admin('discovered', 'enrol', '02:00:00:00:09', ...base);
    expect([badMac.code, badMac.stderr.trim()]).toEqual([1, 'dozen: bad MAC address "02:00:00:00:09": expected six hex pairs like 02:00:00:00:00:01']);
    const unseen = await admin('discovered', 'enrol', '02:00:00:00:09:77', ...base);
    expect(unseen.code).toBe(1);
    expect(unseen.stderr).toMatch(/02:00:00:00:09:77 is not among the discovered MACs/);
    const badIp = await admin('discovered', 'enrol', '02:00:00:00:09:02', '--id', 'disc-02', '--ip', '10.99.0.1', '--image', 'test');
    expect(badIp.code).toBe(1);
    expect(badIp.stderr).toMatch(/^dozen: 400: .*10\.99\.0\.1/);
    const badPower = await admin('discovered', 'enrol', '02:00:00:00:09:02', ...base, '--power', '{nope');
    expect([badPower.code, badPower.stderr]).toEqual([1, expect.stringMatching(/^dozen: --power is not JSON/)]);
    const forced = await admin('discovered', 'enrol', '02:00:00:00:09:77', ...base, '--force', '--json');
    expect(forced.code).toBe(0);
    expect(JSON.parse(forced.stdout)).toMatchObject({ id: 'disc-02', mac: '02:00:00:00:09:77', arch: 'armv7' });
  });
});

describe('board events', () => {
  beforeAll(async () => {
    await h.api('POST', '/boards', { id: 'ev-01', mac: '02:00:00:00:0a:01', model: 'bananapi', arch: 'armv7', ip: '10.77.0.151', image: 'test', power: { driver: 'manual' } });
    h.events.add('ev-01', { type: 'dhcp', message: 'offer 10.77.0.151', details: { xid: 7 } });
  });

  it('lists a board’s events as lines or raw JSON; an unknown board is a 404', async () => {
    const ls = await admin('boards', 'events', 'ev-01');
    expect(ls.code).toBe(0);
    expect(ls.stdout).toMatch(/^\S+Z {2}dhcp {6}offer 10\.77\.0\.151 {2}\{"xid":7\}$/m);
    const raw = await admin('boards', 'events', 'ev-01', '--json');
    expect(JSON.parse(raw.stdout)).toEqual((await h.api('GET', '/boards/ev-01/events')).body);
    const none = await admin('boards', 'events', 'ev-none');
    expect([none.code, none.stderr.trim()]).toEqual([1, 'dozen: 404: board ev-none not found']);
    const badInterval = await admin('boards', 'events', 'ev-01', '--follow', '--interval', '0');
    expect([badInterval.code, badInterval.stderr]).toEqual([1, expect.stringMatching(/--interval must be between 0.2 and 30/)]);
  });

  it('--follow prints each new event once, until Ctrl-C (exit 0)', async () => {
    h.events.add('ev-01', { type: 'state', message: 'before follow' });
    const child = spawn(join(REPO_ROOT, 'bin/dozen'), ['boards', 'events', 'ev-01', '--follow', '--interval', '0.2', '--url', url(), '--token', ADMIN], { env: baseEnv });
    let out = '';
    let err = '';
    child.stdout.on('data', (b) => (out += b));
    child.stderr.on('data', (b) => (err += b));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    try {
      await until('the events so far', () => out.includes('before follow'), { timeoutMs: 20_000, detail: () => err });
      expect(err).toMatch(/following board ev-01 \(Ctrl-C to stop\)/);
      h.events.add('ev-01', { type: 'tftp', message: 'sent zImage', details: { bytes: 4096 } });
      await until('the new event', () => out.includes('sent zImage'), { timeoutMs: 10_000, detail: () => out });
      h.events.add('ev-01', { type: 'error', message: 'no root disk' });
      await until('the next one', () => out.includes('no root disk'), { timeoutMs: 10_000, detail: () => out });
      await new Promise((r) => setTimeout(r, 500)); // a few more polls: nothing printed twice
      child.kill('SIGINT');
      expect(await exited).toBe(0);
    } finally {
      child.kill('SIGKILL');
    }
    const lines = out.trim().split('\n');
    expect(lines.filter((l) => l.includes('offer 10.77.0.151'))).toHaveLength(1);
    expect(lines.filter((l) => l.includes('sent zImage'))).toHaveLength(1);
    expect(lines.at(-1)).toMatch(/Z {2}error {5}no root disk$/);
  });

  it('--follow --json prints one JSON document per event', async () => {
    h.events.add('ev-01', { type: 'state', message: 'before json follow' });
    const child = spawn(join(REPO_ROOT, 'bin/dozen'), ['boards', 'events', 'ev-01', '-f', '--json', '--interval', '0.2', '--url', url(), '--token', ADMIN], { env: baseEnv });
    let out = '';
    child.stdout.on('data', (b) => (out += b));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    try {
      await until('the events so far', () => out.includes('before json follow'), { timeoutMs: 20_000 });
      h.events.add('ev-01', { type: 'power', message: 'on' });
      await until('the new event', () => out.includes('"message":"on"'), { timeoutMs: 10_000, detail: () => out });
      child.kill('SIGINT');
      expect(await exited).toBe(0);
    } finally {
      child.kill('SIGKILL');
    }
    const docs = out.trim().split('\n').map((l) => JSON.parse(l));
    expect(docs).toEqual((await h.api('GET', '/boards/ev-01/events')).body);
  });
});

describe('--json on every list', () => {
  let tenant: string;
  beforeAll(async () => {
    tenant = (await h.api('POST', '/tenants', { id: 'lister', name: 'L' })).body.token;
    await h.api('POST', '/boards', { id: 'list-01', mac: '02:00:00:00:0c:01', model: 'bananapi', arch: 'armv7', ip: '10.77.0.171', image: 'test', power: { driver: 'manual' } });
  });
  it.each([
    { cmd: 'boards ls', path: '/boards', header: /^ID\s+MODEL\s+ARCH\s+MAC/, who: 'admin' },
    { cmd: 'lease ls', path: '/leases', header: /^ID\s+KIND\s+BOARDID/, who: 'admin' },
    { cmd: 'images ls', path: '/images', header: /^NAME\s+ARCH\s+KERNEL/, who: 'admin' },
    { cmd: 'tenants ls', path: '/tenants', header: /^ID\s+NAME\s+CREATEDAT/, who: 'admin' },
    { cmd: 'discovered ls', path: '/discovered', header: /^MAC\s+ARCH/, who: 'admin' },
    // a tenant's view of boards has fewer fields: the table shows those, not empty columns
    { cmd: 'boards ls', path: '/boards', header: /^ID\s+MODEL\s+ARCH\s+AVAILABLE\n.*\s(true|false)\n/, who: 'tenant' },
  ] as Array<{ cmd: string; path: string; header: RegExp; who: 'admin' | 'tenant' }>)('$cmd as $who: one raw JSON document; a table otherwise', async ({ cmd, path, header, who }) => {
    const token = who === 'admin' ? ADMIN : tenant;
    const json = await as(token, ...cmd.split(' '), '--json');
    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout)).toEqual((await h.api('GET', path, undefined, token)).body);
    const table = await as(token, ...cmd.split(' '));
    expect(table.stdout).toMatch(header);
  });
});

describe('dozen ssh', () => {
  let leaseId: string;
  let tenant: string;
  beforeAll(async () => {
    await h.api('POST', '/boards', { id: 'ssh-01', mac: '02:00:00:00:0b:01', model: 'bananapi', arch: 'armv7', ip: '10.77.0.161', image: 'test', power: { driver: 'command', on: 'true', off: 'true', cycle: 'true' } });
    tenant = (await h.api('POST', '/tenants', { id: 'sshy', name: 'SSH' })).body.token;
    const r = await h.api('POST', '/leases', { image: 'test', board: 'ssh-01', sshKeys: [] }, tenant);
    expect(r.status).toBe(202);
    leaseId = r.body.lease.id;
  });

  it('builds ssh -J <lease>@<gateway> root@<board ip>: gateway from --gateway, DOZEN_SSH_GATEWAY, else the API host:2222', async () => {
    const plain = await admin('ssh', leaseId, '--print');
    expect([plain.code, plain.stdout.trim()]).toEqual([0, `ssh -J ${leaseId}@127.0.0.1:2222 root@10.77.0.161`]);
    const env = await dozen(['ssh', leaseId, '--print', '--json', '--url', url(), '--token', ADMIN], { DOZEN_SSH_GATEWAY: 'gw.example:2200' });
    expect(JSON.parse(env.stdout)).toEqual(['ssh', '-J', `${leaseId}@gw.example:2200`, 'root@10.77.0.161']);
    const flag = await dozen(['ssh', leaseId, '--gateway', '[fd00::1]:22', '--print', '--url', url(), '--token', ADMIN, '--', '-v', '-o', 'StrictHostKeyChecking=no', 'uname -a'], { DOZEN_SSH_GATEWAY: 'ignored:1' });
    expect(flag.stdout.trim()).toBe(`ssh -J ssh://${leaseId}@[fd00::1]:22 root@10.77.0.161 -v -o StrictHostKeyChecking=no 'uname -a'`);
    const bad = await admin('ssh', leaseId, '--gateway', 'host:99999', '--print');
    expect([bad.code, bad.stderr]).toEqual([1, expect.stringMatching(/^dozen: bad SSH gateway "host:99999"/)]);
  });

  it('a tenant gets the board address from its lease; another tenant and unknown leases are a 404', async () => {
    // The lease carries its board's address (boardIp, set at allocation): no board record needed.
    const ok = await as(tenant, 'ssh', leaseId, '--print');
    expect([ok.code, ok.stdout.trim()]).toEqual([0, `ssh -J ${leaseId}@127.0.0.1:2222 root@10.77.0.161`]);
    const given = await as(tenant, 'ssh', leaseId, '--ip', '10.77.0.99', '--print');
    expect([given.code, given.stdout.trim()]).toEqual([0, `ssh -J ${leaseId}@127.0.0.1:2222 root@10.77.0.99`]);
    const other = (await h.api('POST', '/tenants', { id: 'other', name: 'Other' })).body.token;
    const notYours = await as(other, 'ssh', leaseId, '--ip', '10.77.0.161', '--print');
    expect([notYours.code, notYours.stderr.trim()]).toEqual([1, `dozen: 404: lease ${leaseId} not found`]);
    const none = await admin('ssh', 'l-nope', '--print');
    expect([none.code, none.stderr.trim()]).toEqual([1, 'dozen: 404: lease l-nope not found']);
  });

  it('runs ssh with the terminal inherited and exits with its status', async () => {
    const bin = mkdtempSync(join(dir, 'bin-'));
    writeFileSync(join(bin, 'ssh'), '#!/bin/sh\nprintf "%s\\n" "$@"\nexit 7\n');
    chmodSync(join(bin, 'ssh'), 0o755);
    const r = await dozen(['ssh', leaseId, '--url', url(), '--token', ADMIN, '--', 'true'], { PATH: `${bin}:${process.env.PATH}` });
    expect([r.code, r.stdout]).toEqual([7, `-J\n${leaseId}@127.0.0.1:2222\nroot@10.77.0.161\ntrue\n`]);
    // a PATH with what bin/dozen needs (node, dirname, readlink) and no ssh
    const nossh = mkdtempSync(join(dir, 'nossh-'));
    for (const tool of [process.execPath, execFileSync('sh', ['-c', 'command -v dirname'], { encoding: 'utf8' }).trim(), execFileSync('sh', ['-c', 'command -v readlink'], { encoding: 'utf8' }).trim()]) {
      symlinkSync(tool, join(nossh, tool.split('/').pop()!));
    }
    const missing = await dozen(['ssh', leaseId, '--url', url(), '--token', ADMIN], { PATH: nossh });
    expect([missing.code, missing.stderr.trim()]).toEqual([1, 'dozen: ssh not found: install the OpenSSH client']);
  });
});

describe('images import from a URL', () => {
  let files: Server;
  let disk: string;
  let kernel: string;
  beforeAll(async () => {
    const src = mkdtempSync(join(dir, 'root-'));
    mkdirSync(join(src, 'boot'));
    const k = Buffer.alloc(256 * 1024, 0x5a);
    k.writeUInt32LE(0x016f2818, 0x24); // the ARM zImage magic
    writeFileSync(join(src, 'boot', 'vmlinuz'), k);
    kernel = join(src, 'boot', 'vmlinuz');
    disk = join(dir, 'root.img');
    execFileSync('mke2fs', ['-q', '-F', '-t', 'ext4', '-d', src, disk, '16M']);
    execFileSync('xz', ['-k', '-T1', '-0', disk]);
    files = createServer((req, res) => {
      if (req.url !== '/root.img.xz') return void res.writeHead(404).end('no such file');
      res.writeHead(200, { 'content-length': String(statSync(`${disk}.xz`).size) });
      createReadStream(`${disk}.xz`).pipe(res);
    }).listen(0, '127.0.0.1');
    await new Promise((r) => files.once('listening', r));
  });
  afterAll(() => new Promise((r) => files.close(r)));
  const at = (p: string) => `http://127.0.0.1:${(files.address() as AddressInfo).port}${p}`;

  it('downloads and sends it, with plain progress lines (no bar) when stderr is not a terminal', async () => {
    const r = await admin('images', 'import', at('/root.img.xz'), '--name', 'from-url', '--kernel', kernel);
    expect([r.code, r.stdout.trim()]).toEqual([0, 'imported from-url (armv7)']);
    expect(r.stderr).not.toContain('\r');
    expect(r.stderr).toMatch(/^ {2}upload +\[[# ]{30}\] +\d+% [\d.]+ MB \/ [\d.]+ MB$/m);
    expect(r.stderr).toMatch(/^ {2}upload +\[#{30}\] 100% /m); // the last bytes are reported
    expect((await h.api('GET', '/images')).body.map((i: { name: string }) => i.name)).toContain('from-url');
  });

  it('a URL that fails, or a file that does not exist, is a clear error', async () => {
    const missing = await admin('images', 'import', at('/nope.img'), '--name', 'nope', '--kernel', kernel);
    expect([missing.code, missing.stderr.trim()]).toEqual([1, `dozen: cannot fetch ${at('/nope.img')}: 404 Not Found`]);
    const closed = createServer().listen(0, '127.0.0.1');
    await new Promise((r) => closed.once('listening', r));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((r) => closed.close(r));
    const refused = await admin('images', 'import', `http://127.0.0.1:${port}/x.img`, '--name', 'nope', '--kernel', kernel);
    expect([refused.code, refused.stderr]).toEqual([1, expect.stringMatching(new RegExp(`^dozen: cannot fetch http://127\\.0\\.0\\.1:${port}/x\\.img: .*ECONNREFUSED`))]);
    const nofile = await admin('images', 'import', join(dir, 'absent.img'), '--upload', '--name', 'nope', '--kernel', kernel);
    expect([nofile.code, nofile.stderr.trim()]).toEqual([1, `dozen: cannot read ${join(dir, 'absent.img')}: ENOENT`]);
  });
});

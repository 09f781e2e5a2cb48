import { execFileSync } from 'node:child_process';
import { request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseToken } from '../../src/auth/tokens.js';
import { metadataApp, newBootToken } from '../../src/leases/metadata.js';
import { manualDesk } from '../../src/power/manual.js';
import type { Job } from '../../src/store/schema.js';
import { ADMIN, apiHarness } from '../helpers/api-harness.js';
import { until } from '../helpers/until.js';

// Boards here are switched by the `command` power driver (a shell `true`): real jobs run, and with
// short timeouts a lease whose board never boots ends in `error` — enough to test the API's rules.
let h: Awaited<ReturnType<typeof apiHarness>>;
let tokenA: string;
let tokenB: string;
const KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl a@laptop';

const board = (i: number) => ({
  id: `bpi-${String(i).padStart(2, '0')}`,
  mac: `02:00:00:00:01:${i.toString(16).padStart(2, '0')}`,
  model: 'bananapi',
  arch: 'armv7',
  ip: `10.77.0.${100 + i}`,
  power: { driver: 'command', on: 'true', off: 'true', cycle: 'true' },
  image: 'test',
});

beforeAll(async () => {
  h = await apiHarness({ timeouts: { actionMs: 2000, bootMs: 150, osMs: 150 } });
  for (let i = 1; i <= 4; i++) expect((await h.api('POST', '/boards', board(i))).status).toBe(201);
  tokenA = (await h.api('POST', '/tenants', { id: 'alice', name: 'Alice' })).body.token;
  tokenB = (await h.api('POST', '/tenants', { id: 'bob', name: 'Bob' })).body.token;
});
afterAll(() => h.close());

describe('allocation', () => {
  it('200 concurrent requests for 4 free boards give exactly 4 leases; the rest 409 with the reason', async () => {
    const results = await Promise.all(
      Array.from({ length: 200 }, (_, i) => h.api('POST', '/leases', { image: 'test', sshKeys: [KEY] }, i % 2 ? tokenA : tokenB)),
    );
    const ok = results.filter((r) => r.status === 202);
    const conflict = results.filter((r) => r.status === 409);
    expect(ok).toHaveLength(4);
    expect(conflict).toHaveLength(196);
    expect(conflict[0]!.body.error).toMatch(/no free board for image test: bpi-01 is provisioning/);
    const boards = ok.map((r) => r.body.lease.boardId).sort();
    expect(boards).toEqual(['bpi-01', 'bpi-02', 'bpi-03', 'bpi-04']);
    // the store agrees: one live lease per board, each board provisioning
    const live = h.store.state.leases.filter((l) => l.state !== 'released');
    expect(new Set(live.map((l) => l.boardId)).size).toBe(live.length);
    // every board taken: provisioning, or already in error when its 150-ms boot window ran out while the
    // 196 refusals were still being answered (no board here ever boots)
    expect(h.store.state.boards.every((b) => b.state === 'provisioning' || b.state === 'error'), JSON.stringify(h.store.state.boards.map((b) => [b.id, b.state]))).toBe(true);
    // let the jobs end (boards never boot here → error), then release everything
    await Promise.all(ok.map((r) => h.leases.settle(r.body.job.id)));
    for (const r of ok) await h.leases.settle((await h.leases.release('system', r.body.lease.id)).job.id);
    expect(h.store.state.boards.every((b) => b.state === 'available')).toBe(true);
  });
});

describe('a job records its steps and its failure reason', () => {
  it('a board that never asks for DHCP fails the dhcp step after one retry', async () => {
    const r = await h.api('POST', '/leases', { image: 'test', board: 'bpi-01' }, tokenA);
    const job = await h.leases.settle(r.body.job.id);
    expect(job.state).toBe('failed');
    expect(job.steps.map((s) => [s.name, s.state])).toEqual([
      ['network', 'skipped'],
      ['disk', 'skipped'],
      ['power', 'done'],
      ['dhcp', 'failed'],
      ['kernel', 'pending'],
      ['root', 'pending'],
      ['phone-home', 'pending'],
    ]);
    expect(job.steps[3]!.attempts).toBe(2);
    expect(job.error).toMatch(/dhcp: dhcp timed out after 0.15 s/);
    const lease = (await h.api('GET', `/leases/${r.body.lease.id}`, undefined, tokenA)).body;
    expect(lease.state).toBe('error');
    expect((await h.api('GET', '/boards/bpi-01')).body).toMatchObject({ state: 'error', stateReason: expect.stringMatching(/dhcp timed out/) });
    expect((await h.api('GET', `/jobs/${r.body.job.id}`, undefined, tokenA)).body.state).toBe('failed');
    await h.leases.settle((await h.leases.release('system', r.body.lease.id)).job.id);
    expect((await h.api('GET', '/boards/bpi-01')).body.state).toBe('available');
  });
});

describe('authorization matrix', () => {
  let leaseA: string;
  let jobA: string;
  beforeAll(async () => {
    const r = await h.api('POST', '/leases', { image: 'test', board: 'bpi-02', sshKeys: [KEY] }, tokenA);
    leaseA = r.body.lease.id;
    jobA = r.body.job.id;
    await h.leases.settle(jobA);
  });

  // Every route of the API, with what tenant B, tenant A and the admin get.
  const NOT_B = 404;
  const cases = (): Array<[string, string, unknown, number, number, number]> => [
    // method, path, body, B, A (owner), admin
    ['GET', `/leases/${leaseA}`, undefined, NOT_B, 200, 200],
    ['POST', `/leases/${leaseA}/reimage`, {}, NOT_B, 202, 202],
    ['POST', `/leases/${leaseA}/power`, { action: 'cycle' }, NOT_B, 409, 409],
    ['GET', `/jobs/${jobA}`, undefined, NOT_B, 200, 200],
    ['POST', `/jobs/${jobA}/cancel`, undefined, NOT_B, 409, 409], // a job that has ended
    ['GET', `/leases/${leaseA}/console`, undefined, NOT_B, 426, 426],
    ['GET', `/leases/${leaseA}/console/log`, undefined, NOT_B, 404, 404],
    ['DELETE', `/leases/${leaseA}`, undefined, NOT_B, 202, 202],
    // the browser session (src/api/routes/session.ts): a Bearer caller has no cookie to read or clear
    ['GET', '/session', undefined, 200, 200, 200],
    ['POST', '/session', { token: 'nope' }, 401, 401, 401],
    ['DELETE', '/session', undefined, 204, 204, 204],
    ['GET', '/boards/bpi-02', undefined, 403, 403, 200],
    ['POST', '/boards', board(9), 403, 403, 201],
    ['PATCH', '/boards/bpi-09', { model: 'bananapro' }, 403, 403, 200],
    ['GET', '/boards/bpi-09/events', undefined, 403, 403, 200],
    ['POST', '/boards/bpi-09/state', { state: 'maintenance', reason: 'test' }, 403, 403, 200],
    ['GET', '/boards/bpi-09/power', undefined, 403, 403, 200],
    ['POST', '/boards/bpi-09/power/confirm', undefined, 403, 403, 409],
    ['DELETE', '/boards/bpi-09', undefined, 403, 403, 204],
    ['GET', '/discovered', undefined, 403, 403, 200],
    ['GET', '/boards/bpi-02/console', undefined, 403, 403, 426],
    ['GET', '/consoles', undefined, 403, 403, 200],
    ['GET', '/tenants', undefined, 403, 403, 200],
    ['POST', '/tenants', { id: 'carol', name: 'Carol' }, 403, 403, 201],
    ['POST', '/tenants/carol/tokens', {}, 403, 403, 201],
    ['DELETE', '/tokens/000000000000', undefined, 403, 403, 404],
    ['GET', '/whoami', undefined, 200, 200, 200],
    ['GET', '/boards', undefined, 200, 200, 200],
    ['GET', '/leases', undefined, 200, 200, 200],
    ['GET', '/images', undefined, 200, 200, 200],
    ['GET', '/images/test', undefined, 200, 200, 200],
    ['GET', '/images/jobs', undefined, 403, 403, 200],
    ['GET', '/images/jobs/nope', undefined, 403, 403, 404],
    ['POST', '/images', { name: 'x', source: { path: '/nonexistent.img' } }, 403, 403, 400],
    ['DELETE', '/images/test', undefined, 403, 403, 409],
    ['GET', '/health', undefined, 200, 200, 200],
    ['GET', '/openapi.json', undefined, 200, 200, 200],
  ];

  it('covers every route of the OpenAPI document', async () => {
    const doc = (await h.api('GET', '/openapi.json')).body;
    const documented = Object.entries(doc.paths).flatMap(([path, ops]) => Object.keys(ops as object).map((m) => `${m.toUpperCase()} ${path.replace(/^\/v1/, '')}`));
    const tested = new Set(cases().map(([m, p]) => `${m} ${p.replace(leaseA, '{id}').replace(jobA, '{id}').replace(/\/boards\/bpi-0\d/, '/boards/{id}').replace('/images/jobs/nope', '/images/jobs/{id}').replace('/images/test', '/images/{name}').replace('/tenants/carol', '/tenants/{id}').replace('/tokens/000000000000', '/tokens/{id}')}`));
    tested.add('POST /leases').add('GET /events'); // below
    expect(documented.filter((d) => !tested.has(d))).toEqual([]);
  });

  it('tenant B gets 404 for A’s lease and job, 403 for admin routes; A and the admin get through', async () => {
    for (const [method, path, body, b] of cases()) {
      expect([method, path, (await h.api(method, path, body, tokenB)).status]).toEqual([method, path, b]);
    }
    // B's lease list does not show A's lease
    expect((await h.api('GET', '/leases', undefined, tokenB)).body.map((l: { id: string }) => l.id)).not.toContain(leaseA);
    // the owner, then the admin, in order (reimage/release change state as they go)
    for (const [method, path, body, , a] of cases().slice(0, 7)) {
      const res = await h.api(method, path, body, tokenA);
      expect([method, path, res.status, res.status === a ? '' : res.body?.error]).toEqual([method, path, a, '']);
    }
    await h.leases.settle(h.leases.get({ role: 'admin', tenantId: null, tokenId: null }, leaseA).jobId!);
    for (const [method, path, body, , , admin] of cases()) {
      expect([method, path, (await h.api(method, path, body, ADMIN)).status]).toEqual([method, path, admin]);
    }
  });

  it('the event stream shows a tenant only its own jobs and leases', async () => {
    // Each tenant's stream must be up (200, subscribed) before A acts; B's own lease, created after A's lease is
    // settled and released, is the marker that B's stream was live all along and has had time to carry A's events.
    const ctl = new AbortController();
    const open = async (token: string) => {
      const res = await fetch(`${h.base}/events`, { headers: { authorization: `Bearer ${token}` }, signal: ctl.signal });
      const s = { status: res.status, type: res.headers.get('content-type'), text: '', error: null as Error | null };
      void (async () => {
        const reader = res.body!.getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) return;
          s.text += Buffer.from(value).toString();
        }
      })().catch((err: Error) => {
        if (!ctl.signal.aborted) s.error = err;
      });
      return s;
    };
    try {
      const [a, b] = await Promise.all([open(tokenA), open(tokenB)]);
      expect([a.status, a.type, b.status, b.type]).toEqual([200, 'text/event-stream', 200, 'text/event-stream']);
      // the preamble is written once the handler runs; it subscribes in the same tick
      await until('both streams open', () => a.text.includes(': dozen events') && b.text.includes(': dozen events'), { timeoutMs: 5000 });

      const r = await h.api('POST', '/leases', { image: 'test' }, tokenA);
      await h.leases.settle(r.body.job.id);
      await h.leases.settle((await h.leases.release('system', r.body.lease.id)).job.id);
      await until('A sees its lease released', () => a.text.includes(`"state":"released"`) && a.text.includes(r.body.lease.id), { timeoutMs: 5000 });
      expect(a.text).toMatch(/event: job/);

      const mine = await h.api('POST', '/leases', { image: 'test' }, tokenB);
      expect(mine.status).toBe(202);
      await until('B sees its own lease (the marker)', () => b.text.includes(mine.body.lease.id), { timeoutMs: 5000 });
      expect(b.text).toMatch(/event: lease/);
      expect(b.text).not.toContain(r.body.lease.id);
      expect(b.text).not.toContain(r.body.job.id);
      expect(b.text).not.toContain('"tenantId":"alice"');
      expect([a.error, b.error]).toEqual([null, null]);
      await h.leases.settle(mine.body.job.id);
      await h.leases.settle((await h.leases.release('system', mine.body.lease.id)).job.id);
    } finally {
      ctl.abort();
    }
  });
});

describe('bad input', () => {
  it('unknown image, no free board, invalid JSON or fields, expired or revoked tokens', async () => {
    expect((await h.api('POST', '/leases', { image: 'nope' }, tokenA)).body.error).toMatch(/image: unknown image "nope"/);
    const busy = await h.api('POST', '/leases', { image: 'test', board: 'bpi-77' }, tokenA);
    expect([busy.status, busy.body.error]).toEqual([409, 'no board matches board bpi-77, image test']);
    // A board whose model the image cannot boot: 409 naming both, for a lease and for a reimage onto it.
    expect((await h.api('POST', '/boards', { ...board(60), id: 'pro-1', model: 'bananapro' })).status).toBe(201);
    const misfit = await h.api('POST', '/leases', { image: 'test', board: 'pro-1' }, tokenA);
    expect([misfit.status, misfit.body.error]).toEqual([409, 'image test cannot boot model bananapro (armv7): it has no device tree sun7i-a20-bananapro.dtb (board pro-1)']);
    const wrongArch = await h.api('POST', '/leases', { image: 'test', arch: 'arm64' }, tokenA);
    expect([wrongArch.status, wrongArch.body.error]).toEqual([400, 'arch: image test has no arm64 build (it has armv7)']);
    expect((await h.api('DELETE', '/boards/pro-1')).status).toBe(204);
    const j = await h.api('POST', '/leases', '{"image":', tokenA);
    expect([j.status, j.body.error]).toEqual([400, expect.stringMatching(/invalid JSON/)]);
    const f = await h.api('POST', '/leases', { image: 'test', sshKeys: ['not a key'], hostname: 'Bad_Name', extra: 1 }, tokenA);
    expect(f.status).toBe(400);
    expect(f.body.details.fields.map((x: { field: string }) => x.field).sort()).toEqual(['(body)', 'hostname', 'sshKeys.0']);
    const past = await h.api('POST', '/leases', { image: 'test', expiresAt: '2001-01-01T00:00:00Z' }, tokenA);
    expect(past.body.error).toMatch(/expiresAt: must be in the future/);

    // expiry, without racing the clock: a token valid for an hour works; its expiry moved into the past (in the
    // store, as time passing would) makes it fail with the reason.
    const soon = (await h.api('POST', '/tenants/alice/tokens', { expiresAt: new Date(Date.now() + 3600_000).toISOString() })).body;
    expect((await h.api('GET', '/whoami', undefined, soon.token)).status).toBe(200);
    await h.store.update((st) => {
      st.tokens.find((t) => t.id === soon.tokenId)!.expiresAt = new Date(Date.now() - 1000).toISOString();
    });
    const expired = await h.api('GET', '/whoami', undefined, soon.token);
    expect([expired.status, expired.body.error]).toEqual([401, 'token expired']);
    // and it happens by itself: a token living 1 s works until then and fails after (polled, with a generous bound);
    // an answer that arrived before expiresAt was decided before it, so it must have let the token in.
    const expiresAt = Date.now() + 1000;
    const brief = (await h.api('POST', '/tenants/alice/tokens', { expiresAt: new Date(expiresAt).toISOString() })).body;
    const answers: Array<{ at: number; status: number; error?: string }> = [];
    await until('the 1 s token to expire', async () => {
      const res = await h.api('GET', '/whoami', undefined, brief.token);
      answers.push({ at: Date.now(), status: res.status, error: res.body?.error });
      return res.status === 401;
    }, { timeoutMs: 15_000, intervalMs: 0 });
    expect(answers.filter((x) => x.at < expiresAt && x.status !== 200)).toEqual([]);
    expect(answers.at(-1)).toMatchObject({ status: 401, error: 'token expired' });
    expect(answers.at(-1)!.at).toBeGreaterThanOrEqual(expiresAt);
    const other = (await h.api('POST', '/tenants/alice/tokens', {})).body;
    expect((await h.api('DELETE', `/tokens/${other.tokenId}`)).status).toBe(204);
    expect((await h.api('GET', '/whoami', undefined, other.token)).body.error).toBe('token revoked');
    expect((await h.api('GET', '/whoami', undefined, 'dz_123456789abc_forged')).body.error).toBe('invalid token');
    // tokens are stored hashed: the secret appears nowhere in the state file
    const secret = parseToken(other.token)?.secret;
    expect(secret).toMatch(/^[A-Za-z0-9_-]{32}$/); // 24 random bytes, base64url: may itself hold '_'
    expect(JSON.stringify(h.store.state)).not.toContain(secret);
  });
});

const CONSOLE_PW = 'correct horse battery';
/** The crypt of `password` with the salt of `hash`: equal to `hash` exactly when it is that password's. */
const cryptAgain = (password: string, hash: string) => execFileSync('openssl', ['passwd', '-6', '-salt', hash.split('$')[2]!, '-stdin'], { input: password, encoding: 'utf8' }).trim();

describe('console password', () => {
  it('is refused when too short, not printable, or asked for a container', async () => {
    for (const [consolePassword, why] of [['short', /at least 8/], ['tab\there-and-more', /printable ASCII/], ['x'.repeat(129), /too big|at most|<=128/i]] as const) {
      const r = await h.api('POST', '/leases', { image: 'test', sshKeys: [KEY], consolePassword }, tokenA);
      expect(r.status).toBe(400);
      expect(JSON.stringify(r.body)).toMatch(why);
    }
    const c = await h.api('POST', '/leases', { kind: 'container', image: 'test', consolePassword: CONSOLE_PW }, tokenA);
    expect(c.status).toBe(c.body?.error?.includes('no container hosts') ? 409 : 400);
  });
});

describe('metadata service', () => {
  it('serves a lease’s metadata only to its board’s IP with the current boot’s token', async () => {
    const r = await h.api('POST', '/leases', { image: 'test', board: 'bpi-03', sshKeys: [KEY], hostname: 'alice-box', consolePassword: CONSOLE_PW }, tokenA);
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    const leaseId = r.body.lease.id;
    // The console password is kept only as its SHA-512 crypt hash, and the API never shows even that.
    const hash = h.store.state.leases.find((l) => l.id === leaseId)!.consolePasswordHash!;
    expect(hash).toMatch(/^\$6\$[./0-9A-Za-z]{1,16}\$[./0-9A-Za-z]{86}$/);
    expect(cryptAgain(CONSOLE_PW, hash)).toBe(hash);
    expect(JSON.stringify(h.store.state)).not.toContain(CONSOLE_PW);
    expect(r.body.lease.consolePasswordHash).toBe('(hidden)');
    expect(JSON.stringify((await h.api('GET', `/leases/${leaseId}`, undefined, tokenA)).body)).not.toContain(hash);
    const app = metadataApp({ store: h.store, signals: h.signals, boardIp: (id) => (id === 'bpi-03' ? '127.0.0.3' : '127.0.0.4') });
    const srv = app.listen(0, '127.0.0.1');
    await new Promise((res) => srv.once('listening', res));
    const port = (srv.address() as AddressInfo).port;
    const get = (path: string, from: string, method = 'GET') =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = request({ host: '127.0.0.1', port, path, method, localAddress: from }, (res) => {
          let body = '';
          res.on('data', (c) => (body += c));
          res.on('end', () => resolve({ status: res.statusCode!, body }));
        });
        req.on('error', reject);
        req.end();
      });
    // The job's power step made this boot's token before it tried the (unreachable) board; a next boot
    // is made the same way.
    await h.leases.settle(r.body.job.id);
    const boot = async () => {
      const t = newBootToken();
      await h.store.update((s) => void (s.leases.find((l) => l.id === leaseId)!.bootToken = t));
      return t;
    };
    try {
      const token = h.store.state.leases.find((l) => l.id === leaseId)!.bootToken!;
      expect(token).toMatch(/^[A-Za-z0-9]{24}$/);
      const own = await get(`/m/${leaseId}/${token}/meta-data`, '127.0.0.3');
      expect(own).toEqual({ status: 200, body: `instance-id: ${leaseId}\nlocal-hostname: alice-box\n` });
      const userData = (await get(`/m/${leaseId}/${token}/user-data`, '127.0.0.3')).body;
      expect(userData).toContain(KEY);
      expect(userData).toContain(`chpasswd:\n  expire: false\n  users:\n    - name: root\n      type: hash\n      password: "${hash}"\n`);
      // B's board (another IP) asking for A's lease, even with A's token: not found
      expect((await get(`/m/${leaseId}/${token}/user-data`, '127.0.0.4')).status).toBe(404);
      expect((await get(`/m/${leaseId}/${token}/phone-home`, '127.0.0.4', 'POST')).status).toBe(404);
      // The board's own address without the boot's token (a spoofed source address): not found
      expect((await get(`/m/${leaseId}/user-data`, '127.0.0.3')).status).toBe(404);
      expect((await get(`/m/${leaseId}/phone-home`, '127.0.0.3', 'POST')).status).toBe(404);
      expect((await get(`/m/${leaseId}/${'x'.repeat(24)}/user-data`, '127.0.0.3')).status).toBe(404);
      expect((await get(`/m/${leaseId}/${token}/phone-home`, '127.0.0.3', 'POST')).status).toBe(200);
      // The next boot: the last boot's token is worthless
      const next = await boot();
      expect((await get(`/m/${leaseId}/${token}/meta-data`, '127.0.0.3')).status).toBe(404);
      expect((await get(`/m/${leaseId}/${next}/meta-data`, '127.0.0.3')).status).toBe(200);
      // and the token is never shown by the API
      expect(JSON.stringify((await h.api('GET', `/leases/${leaseId}`, undefined, tokenA)).body)).not.toContain(next);
    } finally {
      srv.close();
      await h.leases.settle(r.body.job.id);
    }
  });
});

describe('housekeeping', () => {
  it('released leases and their jobs are forgotten after the keep period, live ones never', async () => {
    const before = h.store.state.leases.length;
    const released = h.store.state.leases.filter((l) => l.state === 'released').length;
    expect(released).toBeGreaterThan(0);
    expect(await h.leases.prune(60_000)).toBe(0); // all released just now
    expect(await h.leases.prune(60_000, Date.now() + 120_000)).toBe(released);
    expect(h.store.state.leases).toHaveLength(before - released);
    expect(h.store.state.leases.every((l) => l.state !== 'released')).toBe(true);
    const ids = new Set(h.store.state.leases.map((l) => l.id));
    expect(h.store.state.jobs.every((j) => ids.has(j.leaseId))).toBe(true);
  });
});

describe('OpenAPI', () => {
  it('is generated from the same schemas that validate requests', async () => {
    const doc = (await h.api('GET', '/openapi.json')).body;
    const body = doc.paths['/v1/leases'].post.requestBody.content['application/json'].schema;
    expect(body.properties.sshKeys.items.pattern).toMatch(/ssh-/);
    expect(body.required).toEqual(['image']);
    expect(body.properties.kind.enum).toEqual(['board', 'container', 'any']);
    expect(doc.paths['/v1/boards/{id}'].patch['x-dozen-access']).toBe('admin');
  });
});

describe('power jobs', () => {
  // A board with manual power: its actions wait on the operator's desk until confirmed or cancelled, so
  // a power job's lifecycle is in the test's hands. Enrolled here, after the allocation tests.
  const BOARD = 'bpi-05';
  const admin = { role: 'admin' as const, tenantId: null, tokenId: null };
  let leaseId: string;
  /** Wait until the desk asks the operator for something on the board; returns the actions asked. */
  const asked = async () => {
    await until(`the manual desk to ask for ${BOARD}`, () => manualDesk.waiting(BOARD).length > 0, { timeoutMs: 5000 });
    return manualDesk.waiting(BOARD).map((w) => w.action);
  };
  /** Play the operator: confirm whatever the desk asks for the board until the job ends. */
  const operate = async (jobId: string): Promise<Job> => {
    const done = h.leases.settle(jobId);
    let ended = false;
    void done.finally(() => (ended = true));
    await until(`job ${jobId} ending while the operator confirms`, () => {
      if (ended) return true;
      manualDesk.confirm(BOARD);
      return false;
    }, { timeoutMs: 30_000, intervalMs: 10 });
    return done;
  };
  const lease = () => h.store.state.leases.find((l) => l.id === leaseId)!;

  beforeAll(async () => {
    expect((await h.api('POST', '/boards', { ...board(5), power: { driver: 'manual' } })).status).toBe(201);
    const r = await h.api('POST', '/leases', { image: 'test', board: BOARD }, tokenA);
    expect(r.status).toBe(202);
    leaseId = r.body.lease.id;
    // only power jobs are cancelled; a provision (here waiting on the desk) is stopped by a release
    await asked();
    const c = await h.api('POST', `/jobs/${r.body.job.id}/cancel`, undefined, tokenA);
    expect([c.status, c.body.error]).toEqual([409, `job ${r.body.job.id} is a provision job: only power jobs can be cancelled; a provision or reimage is stopped by releasing the lease (DELETE /v1/leases/${leaseId})`]);
    expect((await operate(r.body.job.id)).state).toBe('failed'); // the board never boots here
    // as if it had booted: the lease is active (a power job's outcome must leave it so)
    await h.store.update((st) => {
      const l = st.leases.find((x) => x.id === leaseId)!;
      l.state = 'active';
      delete l.stateReason;
      st.boards.find((b) => b.id === BOARD)!.state = 'active';
    });
  });

  it('202 with the lease and a one-step power job; the lease is unchanged, new boot secrets, published when it ends', async () => {
    const before = structuredClone(lease());
    const published: unknown[] = [];
    const off = h.bus.subscribe((ev) => ev.type === 'lease' && (ev.data as { id: string }).id === leaseId && published.push(ev.data));
    try {
      const r = await h.api('POST', `/leases/${leaseId}/power`, { action: 'cycle' }, tokenA);
      expect(r.status).toBe(202);
      expect(r.body.lease).toMatchObject({ id: leaseId, state: 'active', jobId: before.jobId });
      expect(r.body.job).toMatchObject({ kind: 'power', leaseId, tenantId: 'alice', state: 'running', params: { action: 'cycle', by: 'tenant alice' } });
      expect(r.body.job.steps.map((x: { name: string }) => x.name)).toEqual(['power']);
      expect(await asked()).toEqual(['cycle']);
      // one job per lease: a second power action, or a reimage, waits for it
      const second = await h.api('POST', `/leases/${leaseId}/power`, { action: 'off' }, tokenA);
      expect([second.status, second.body.error]).toEqual([409, `lease ${leaseId} has a power job running (${r.body.job.id}); wait for it to end or cancel it (POST /v1/jobs/${r.body.job.id}/cancel)`]);
      const reimage = await h.api('POST', `/leases/${leaseId}/reimage`, {}, tokenA);
      expect([reimage.status, reimage.body.error]).toEqual([409, expect.stringContaining(`has a power job running (${r.body.job.id})`)]);
      expect(published).toEqual([]); // nothing of the lease changed yet
      expect(manualDesk.confirm(BOARD)).toBe(true);
      const job = await h.leases.settle(r.body.job.id);
      expect(job.state).toBe('succeeded');
      expect(job.steps.map((x) => [x.name, x.state])).toEqual([['power', 'done']]);
      expect((await h.api('GET', `/jobs/${job.id}`, undefined, tokenA)).body).toMatchObject({ kind: 'power', state: 'succeeded' });
      // the lease: same state and job, a new boot token (metadata of the last boot is worthless)
      const after = lease();
      expect({ ...after, bootToken: undefined }).toEqual({ ...before, bootToken: undefined });
      expect(after.bootToken).toMatch(/^[A-Za-z0-9]{24}$/);
      expect(after.bootToken).not.toBe(before.bootToken);
      expect(published).toEqual([expect.objectContaining({ id: leaseId, state: 'active' })]);
      expect((await h.api('GET', `/boards/${BOARD}/events`)).body.map((e: { message: string }) => e.message)).toContain('power cycle by tenant alice');
      expect((await h.api('GET', `/boards/${BOARD}`)).body.state).toBe('active');
    } finally {
      off();
    }
    // off makes no new boot
    const token = lease().bootToken;
    const r = await h.api('POST', `/leases/${leaseId}/power`, { action: 'off' }, ADMIN);
    expect([r.status, r.body.job.params]).toEqual([202, { action: 'off', by: 'admin' }]);
    expect((await operate(r.body.job.id)).state).toBe('succeeded');
    expect(lease().bootToken).toBe(token);
  });

  it('cancel: the job ends failed "cancelled: …", the desk forgets it, the lease is free for the next job', async () => {
    const before = structuredClone(lease());
    const r = await h.api('POST', `/leases/${leaseId}/power`, { action: 'on' }, tokenA);
    expect(r.status).toBe(202);
    expect(await asked()).toEqual(['on']);
    // another tenant cannot see it, let alone cancel it
    expect((await h.api('POST', `/jobs/${r.body.job.id}/cancel`, undefined, tokenB)).status).toBe(404);
    const c = await h.api('POST', `/jobs/${r.body.job.id}/cancel`, undefined, tokenA);
    expect(c.status).toBe(200);
    expect(c.body).toMatchObject({ id: r.body.job.id, kind: 'power', state: 'failed' });
    // the admin reads who cancelled it; the tenant that it was cancelled (not a failure to report)
    expect((await h.api('GET', `/jobs/${r.body.job.id}`)).body.error).toMatch(/^power: cancelled: by tenant alice$/);
    expect(c.body.error).toBe('power cancelled');
    expect(manualDesk.waiting(BOARD)).toEqual([]);
    expect((await h.api('GET', `/boards/${BOARD}/power`)).body.waiting).toEqual([]);
    expect(manualDesk.confirm(BOARD)).toBe(false); // a late confirmation completes nothing
    // the lease as it was (but for the next boot's token, made before the board was asked to switch on)
    expect({ ...lease(), bootToken: undefined }).toEqual({ ...before, bootToken: undefined });
    // ended: a second cancel is a 409
    const again = await h.api('POST', `/jobs/${r.body.job.id}/cancel`, undefined, ADMIN);
    expect([again.status, again.body.error]).toEqual([409, `job ${r.body.job.id} has already ended (failed)`]);
    // the lease is free: the next power job runs, and the admin may cancel any tenant's
    const next = await h.api('POST', `/leases/${leaseId}/power`, { action: 'cycle' }, tokenA);
    expect(next.status).toBe(202);
    await asked();
    const byAdmin = await h.api('POST', `/jobs/${next.body.job.id}/cancel`, undefined, ADMIN);
    expect([byAdmin.status, byAdmin.body.state, byAdmin.body.error]).toEqual([200, 'failed', 'power: cancelled: by admin']);
    expect(manualDesk.waiting(BOARD)).toEqual([]);
  });

  it('an interrupted power job resumes after a restart', async () => {
    // as the state file has it after a crash: a power job recorded running, in its power step
    const job: Job = {
      id: 'j-resume00001',
      kind: 'power',
      leaseId,
      tenantId: 'alice',
      state: 'running',
      steps: [{ name: 'power', state: 'running', attempts: 1, startedAt: new Date().toISOString() }],
      params: { action: 'cycle', by: 'tenant alice' },
      createdAt: new Date().toISOString(),
    };
    await h.store.update((st) => void st.jobs.push(structuredClone(job)));
    expect(h.leases.resumeJobs()).toEqual([`job ${job.id} (power of lease ${leaseId}) resumed at step power`]);
    expect(await asked()).toEqual(['cycle']);
    manualDesk.confirm(BOARD);
    const done = await h.leases.settle(job.id);
    expect([done.state, done.steps[0]!.state, done.steps[0]!.attempts]).toEqual(['succeeded', 'done', 2]);
    expect(lease().state).toBe('active');
  });

  it('a job cut short during its last attempt gets that attempt again after a restart, not a failure with no reason', async () => {
    const job: Job = {
      id: 'j-resume00002',
      kind: 'power',
      leaseId,
      tenantId: 'alice',
      state: 'running',
      steps: [{ name: 'power', state: 'running', attempts: 2, startedAt: new Date().toISOString() }],
      params: { action: 'cycle', by: 'tenant alice' },
      createdAt: new Date().toISOString(),
    };
    await h.store.update((st) => void st.jobs.push(structuredClone(job)));
    h.leases.resumeJobs();
    expect(await asked()).toEqual(['cycle']);
    manualDesk.confirm(BOARD);
    const done = await h.leases.settle(job.id);
    expect([done.state, done.error, done.steps[0]!.state, done.steps[0]!.attempts]).toEqual(['succeeded', undefined, 'done', 2]);
  });

  it('after a restart: a job started since the API listened is not started twice; one whose lease has moved on ends without running', async () => {
    const r = await h.api('POST', `/leases/${leaseId}/power`, { action: 'cycle' }, tokenA); // as in the window before resumeJobs
    expect(await asked()).toEqual(['cycle']);
    const at = new Date().toISOString();
    const stale: Job = { id: 'j-supersede1', kind: 'reimage', leaseId, tenantId: 'alice', state: 'running', steps: [{ name: 'power', state: 'running', attempts: 1, startedAt: at }], params: {}, createdAt: at };
    await h.store.update((st) => void st.jobs.push(structuredClone(stale)));
    expect(h.leases.resumeJobs()).toEqual([`job ${stale.id} (reimage of lease ${leaseId}) not resumed: its lease has moved on to job ${lease().jobId}`]);
    await until('the superseded job ended', () => h.store.state.jobs.find((j) => j.id === stale.id)!.state === 'failed', { timeoutMs: 5000 });
    expect(h.store.state.jobs.find((j) => j.id === stale.id)!.error).toBe(`superseded by job ${lease().jobId}`);
    expect(manualDesk.waiting(BOARD), 'the power job was asked for once, not started again').toHaveLength(1);
    manualDesk.confirm(BOARD);
    expect((await h.leases.settle(r.body.job.id)).state).toBe('succeeded');
    expect(manualDesk.waiting(BOARD)).toEqual([]);
    expect(lease().state).toBe('active');
  });

  it('at start, a lease left reimaging behind a job that had ended (a crash between two writes, before they were one) is settled', async () => {
    const at = new Date().toISOString();
    const ended: Job = { id: 'j-ended000001', kind: 'reimage', leaseId, tenantId: 'alice', state: 'succeeded', steps: [{ name: 'power', state: 'done', attempts: 1, startedAt: at, endedAt: at }], params: {}, createdAt: at, endedAt: at };
    const before = lease().jobId;
    await h.store.update((st) => {
      st.jobs.push(structuredClone(ended));
      const l = st.leases.find((x) => x.id === leaseId)!;
      l.state = 'reimaging';
      l.jobId = ended.id;
      st.boards.find((b) => b.id === BOARD)!.state = 'provisioning';
    });
    expect(await h.leases.settleEndedJobs()).toEqual([`lease ${leaseId} was still reimaging after its reimage job ${ended.id} had succeeded: now active`]);
    expect([lease().state, (await h.api('GET', `/boards/${BOARD}`)).body.state]).toEqual(['active', 'active']);
    expect(await h.leases.settleEndedJobs(), 'and only once').toEqual([]);
    await h.store.update((st) => void (st.leases.find((x) => x.id === leaseId)!.jobId = before));
  });

  it('a release cancels a running power job', async () => {
    const r = await h.api('POST', `/leases/${leaseId}/power`, { action: 'cycle' }, tokenA);
    await asked();
    const rel = await h.api('DELETE', `/leases/${leaseId}`, undefined, tokenA);
    expect(rel.status).toBe(202);
    const power = await h.leases.settle(r.body.job.id);
    expect([power.state, power.error]).toEqual(['failed', 'power: cancelled: released by tenant']);
    // the release's power-off is the next (and only) thing the operator is asked
    expect(await asked()).toEqual(['off']);
    expect((await operate(rel.body.job.id)).state).toBe('succeeded');
    expect(h.leases.get(admin, leaseId).state).toBe('released');
    expect((await h.api('GET', `/boards/${BOARD}`)).body.state).toBe('available');
  });
});

describe('allocation and the boot network', () => {
  it('passes over a board whose port is not fenced, and says so when it is the only one', async () => {
    const net = await apiHarness({ timeouts: { actionMs: 2000, bootMs: 150, osMs: 150 }, network: { join: async () => {}, leave: async () => {}, fenced: (id) => id !== 'bpi-01' } });
    try {
      for (const i of [1, 2]) expect((await net.api('POST', '/boards', board(i))).status).toBe(201);
      const t = (await net.api('POST', '/tenants', { id: 'fen', name: 'F' })).body.token;
      // bpi-01 is first by id, but unfenced: the lease gets bpi-02.
      const any = await net.api('POST', '/leases', { image: 'test', sshKeys: [KEY] }, t);
      expect([any.status, any.body.lease?.boardId]).toEqual([202, 'bpi-02']);
      const named = await net.api('POST', '/leases', { image: 'test', board: 'bpi-01', sshKeys: [KEY] }, t);
      expect([named.status, named.body.error]).toEqual([409, 'no free board for board bpi-01, image test: bpi-01 has no fenced network port (see GET /v1/network)']);
    } finally {
      await net.close();
    }
  });
});

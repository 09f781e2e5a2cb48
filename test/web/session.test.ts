import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN } from '../helpers/api-harness.js';
import { requireTools } from '../helpers/tools.js';
import { until } from '../helpers/until.js';
import { cookiePair, raw, startWebServer, wsAttempt } from './harness.js';

// The session cookie at the HTTP level, over the real API (store, tokens, leases, console bridge): what it
// sets, what it lets through, and the attacks it must refuse — another tenant's cookie, a cross-origin
// POST or DELETE, a cross-origin WebSocket — while Bearer tokens work exactly as before.
let srv: Awaited<ReturnType<typeof startWebServer>>;
let shell: ChildProcess;
let A: string; // tenant tokens
let B: string;
let leaseA: string;
let leaseB: string;
let own: string; // the API's own origin
let dir: string;

/** A board's serial line: a real pty (socat) with a bash on its other end, linked at <dir>/<name>.tty. */
async function shellPty(name: string): Promise<{ line: string; proc: ChildProcess }> {
  const line = join(dir, `${name}.tty`);
  const proc = spawn('socat', [`pty,raw,echo=0,link=${line}`, 'exec:bash --norc --noprofile -i,pty,stderr,setsid,sigint,sane'], { stdio: 'ignore', env: { PATH: process.env.PATH, PS1: 'board$ ', HOME: dir, HISTFILE: '/dev/null' } });
  await until(`the ${name} pty`, () => existsSync(line), { timeoutMs: 5000 });
  return { line, proc };
}

beforeAll(async () => {
  requireTools('socat', 'bash');
  dir = mkdtempSync(join(tmpdir(), 'web-session-'));
  const { line, proc } = await shellPty('sess-1');
  shell = proc;
  srv = await startWebServer();
  own = srv.url;
  A = await srv.tenant('sess-a');
  B = await srv.tenant('sess-b');
  leaseA = await srv.boardLease('sess-1', A);
  leaseB = await srv.boardLease('sess-2', B);
  await srv.sessions.ensure({ id: 'sess-1', serial: line });
}, 60_000);

afterAll(async () => {
  await srv?.stop();
  shell?.kill('SIGKILL');
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const signIn = async (token: string) => {
  const r = await raw(own, 'POST', '/v1/session', { body: { token }, origin: own });
  expect(r.status).toBe(200);
  return cookiePair(r);
};

describe('POST /v1/session', () => {
  it('checks the token and sets an HttpOnly, SameSite=Strict, Path=/ cookie (Secure only over https)', async () => {
    const r = await raw(own, 'POST', '/v1/session', { body: { token: A }, origin: own });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ role: 'tenant', tenant: 'sess-a' });
    expect(JSON.stringify(r.body)).not.toContain(A);
    const sc = String(r.headers['set-cookie']);
    expect(sc).toMatch(/^dozen_session=[^;]+; Path=\/; HttpOnly; SameSite=Strict$/);
    expect(sc).not.toMatch(/Secure/);
    expect(r.headers['cache-control']).toBe('no-store');
    // Behind a TLS-terminating proxy the cookie is Secure.
    const tls = await raw(own, 'POST', '/v1/session', { body: { token: A }, headers: { 'x-forwarded-proto': 'https', origin: own.replace('http:', 'https:') } });
    expect(tls.status).toBe(200);
    expect(String(tls.headers['set-cookie'])).toMatch(/; Secure$/);
  });

  it('refuses a wrong token with 401 and its reason, and sets no cookie', async () => {
    for (const token of ['dz_000000000000_nope', 'garbage', A.slice(0, -2) + 'xx']) {
      const r = await raw(own, 'POST', '/v1/session', { body: { token }, origin: own });
      expect(r.status).toBe(401);
      expect(r.body.error).toBe('invalid token');
      expect(r.headers['set-cookie']).toBeUndefined();
    }
  });

  it('refuses a sign-in from another origin (login CSRF)', async () => {
    const r = await raw(own, 'POST', '/v1/session', { body: { token: A }, origin: 'http://evil.example' });
    expect(r.status).toBe(403);
    expect(r.headers['set-cookie']).toBeUndefined();
  });
});

describe('the cookie on the API', () => {
  it('authenticates reads; GET /v1/session and /v1/whoami say who; DELETE /v1/session clears it', async () => {
    const c = await signIn(A);
    expect((await raw(own, 'GET', '/v1/whoami', { cookie: c })).body).toMatchObject({ role: 'tenant', tenant: 'sess-a' });
    expect((await raw(own, 'GET', '/v1/session', { cookie: c })).body).toMatchObject({ signedIn: true, role: 'tenant', tenant: 'sess-a' });
    expect((await raw(own, 'GET', '/v1/session')).body).toEqual({ signedIn: false });
    expect((await raw(own, 'GET', '/v1/whoami')).status).toBe(401);
    const out = await raw(own, 'DELETE', '/v1/session', { cookie: c, origin: own });
    expect(out.status).toBe(204);
    expect(String(out.headers['set-cookie'])).toMatch(/^dozen_session=; Path=\/; HttpOnly; SameSite=Strict; Max-Age=0/);
  });

  it("tenant B's cookie cannot read, list or touch tenant A's lease", async () => {
    const c = await signIn(B);
    expect((await raw(own, 'GET', `/v1/leases/${leaseA}`, { cookie: c })).status).toBe(404);
    expect((await raw(own, 'GET', `/v1/leases/${leaseB}`, { cookie: c })).status).toBe(200);
    const list = (await raw(own, 'GET', '/v1/leases', { cookie: c })).body as Array<{ id: string }>;
    expect(list.map((l) => l.id)).toEqual([leaseB]);
    expect((await raw(own, 'DELETE', `/v1/leases/${leaseA}`, { cookie: c, origin: own })).status).toBe(404);
    expect((await raw(own, 'GET', `/v1/leases/${leaseA}/console/log`, { cookie: c })).status).toBe(404);
    expect((await raw(own, 'GET', '/v1/tenants', { cookie: c })).status).toBe(403);
    expect(srv.api.store.state.leases.find((l) => l.id === leaseA)?.state).not.toMatch(/releas/);
  });

  it('refuses cookie-authenticated POST/DELETE from another origin or with no Origin; the same origin passes', async () => {
    const c = await signIn(B);
    for (const origin of ['http://evil.example', own.replace('127.0.0.1', 'localhost'), own.replace(/:\d+$/, ':1'), 'null', undefined]) {
      const post = await raw(own, 'POST', `/v1/leases/${leaseB}/power`, { cookie: c, origin, body: { action: 'off' } });
      expect(post.status, `POST with Origin ${origin}`).toBe(403);
      expect(post.body.error).toMatch(/cross-origin/);
      const del = await raw(own, 'DELETE', `/v1/leases/${leaseB}`, { cookie: c, origin });
      expect(del.status, `DELETE with Origin ${origin}`).toBe(403);
    }
    expect(srv.api.store.state.leases.find((l) => l.id === leaseB)?.state).not.toMatch(/releas/);
    const ok = await raw(own, 'POST', `/v1/leases/${leaseB}/power`, { cookie: c, origin: own, body: { action: 'on' } });
    expect(ok.status).toBe(202);
    await srv.api.leases.settle(ok.body.job.id);
  });

  it('Bearer keeps working as before, whatever the Origin, and wins over a cookie', async () => {
    const cB = await signIn(B);
    const r = await raw(own, 'POST', `/v1/leases/${leaseA}/power`, { bearer: A, origin: 'http://evil.example', body: { action: 'on' } });
    expect(r.status).toBe(202);
    await srv.api.leases.settle(r.body.job.id);
    expect((await raw(own, 'GET', `/v1/leases/${leaseA}`, { bearer: A, cookie: cB })).status).toBe(200);
    expect((await raw(own, 'GET', '/v1/whoami', { bearer: 'wrong', cookie: cB })).status).toBe(401);
  });

  it('a revoked token ends its session', async () => {
    const made = await srv.api.api('POST', '/tenants/sess-a/tokens', {});
    const c = await signIn(made.body.token);
    expect((await raw(own, 'GET', '/v1/whoami', { cookie: c })).status).toBe(200);
    expect((await srv.api.api('DELETE', `/tokens/${made.body.tokenId}`)).status).toBe(204);
    const r = await raw(own, 'GET', '/v1/whoami', { cookie: c });
    expect(r.status).toBe(401);
    expect(r.body.error).toBe('token revoked');
    expect((await raw(own, 'GET', '/v1/session', { cookie: c })).body).toEqual({ signedIn: false, reason: 'token revoked' });
  });
});

describe('the console WebSocket with the cookie', () => {
  const path = () => `/v1/leases/${leaseA}/console`;
  it('opens from the same origin, and is refused with a foreign Origin or none (cross-site WebSocket hijacking)', async () => {
    const c = await signIn(A);
    const ok = await wsAttempt(own, path(), { cookie: c, origin: own });
    expect(ok.open).toBe(true);
    if (ok.open) ok.ws.close();
    for (const origin of ['http://evil.example', own.replace(/:\d+$/, ':1')]) {
      const bad = await wsAttempt(own, path(), { cookie: c, origin });
      expect(bad, `Origin ${origin}`).toEqual({ open: false, status: 403 });
    }
    expect(await wsAttempt(own, path(), { cookie: c })).toEqual({ open: false, status: 403 });
    // Tenant B's cookie, from our own origin: not B's lease → 404, as for a bearer.
    expect(await wsAttempt(own, path(), { cookie: await signIn(B), origin: own })).toEqual({ open: false, status: 404 });
    // No credential at all: 401, as before.
    expect(await wsAttempt(own, path(), { origin: own })).toEqual({ open: false, status: 401 });
  });

  it('a bearer token (header or subprotocol) opens it whatever the Origin, as before', async () => {
    const h = await wsAttempt(own, path(), { authorization: `Bearer ${A}`, origin: 'http://evil.example' });
    expect(h.open).toBe(true);
    if (h.open) h.ws.close();
    const s = await wsAttempt(own, path(), { origin: 'http://evil.example' }, ['dozen.console.v1', `bearer.${A}`]);
    expect(s.open).toBe(true);
    if (s.open) s.ws.close();
  });

  it('the admin token signs in too, as admin', async () => {
    const r = await raw(own, 'POST', '/v1/session', { body: { token: ADMIN }, origin: own });
    expect(r.body).toMatchObject({ role: 'admin', tenant: null });
  });
});

describe('behind a reverse proxy that rewrites Host (config publicOrigin)', () => {
  // The browser is on https://dozen.example.test; the proxy forwards to the API with Host 127.0.0.1:<port>.
  const PUBLIC = 'https://dozen.example.test';
  let proxied: Awaited<ReturnType<typeof startWebServer>>;
  let pshell: ChildProcess;
  let lease: string;
  let T: string;
  beforeAll(async () => {
    const { line, proc } = await shellPty('sess-p');
    pshell = proc;
    proxied = await startWebServer({ publicOrigin: PUBLIC });
    T = await proxied.tenant('sess-p');
    lease = await proxied.boardLease('sess-p', T);
    await proxied.sessions.ensure({ id: 'sess-p', serial: line });
  }, 60_000);
  afterAll(async () => {
    await proxied?.stop();
    pshell?.kill('SIGKILL');
  });

  it('without the setting the proxied Origin is foreign: sign-in refused (the bug it fixes)', async () => {
    const r = await raw(own, 'POST', '/v1/session', { body: { token: A }, origin: PUBLIC });
    expect(r.status).toBe(403);
  });

  it('with it: sign-in (a Secure cookie), changes and the console socket from the public origin; foreign origins still refused', async () => {
    const r = await raw(proxied.url, 'POST', '/v1/session', { body: { token: T }, origin: PUBLIC });
    expect(r.status).toBe(200);
    expect(String(r.headers['set-cookie'])).toMatch(/; Secure/); // the browser's side is https
    const c = cookiePair(r);
    // an unsafe request with the cookie from the public origin goes through to the route (here: the job it starts)
    const power = await raw(proxied.url, 'POST', `/v1/leases/${lease}/power`, { cookie: c, origin: PUBLIC, body: { action: 'cycle' } });
    expect(power.status, JSON.stringify(power.body)).toBe(202);
    const evil = await raw(proxied.url, 'POST', `/v1/leases/${lease}/power`, { cookie: c, origin: 'https://evil.example', body: { action: 'cycle' } });
    expect(evil.status).toBe(403);
    expect(evil.body.error).toMatch(/Origin must be this site's own \(https:\/\/dozen\.example\.test\)/);
    const ws = await wsAttempt(proxied.url, `/v1/leases/${lease}/console`, { cookie: c, origin: PUBLIC });
    expect(ws.open).toBe(true);
    if (ws.open) ws.ws.close();
    expect(await wsAttempt(proxied.url, `/v1/leases/${lease}/console`, { cookie: c, origin: 'https://evil.example' })).toEqual({ open: false, status: 403 });
    // a login CSRF from elsewhere is still refused
    expect((await raw(proxied.url, 'POST', '/v1/session', { body: { token: T }, origin: 'https://evil.example' })).status).toBe(403);
  });
});

/**
 * #18.1 "no input ends the process": a bounded fuzz of every route in the OpenAPI document against the
 * real server in its own process (`bin/dozen serve`), as an anonymous client, a tenant and the admin:
 * bad percent-encoding, WebSocket upgrade headers on every path, wrong types, malformed and huge
 * bodies, huge headers, and slow bodies left hanging. After every batch `/v1/health` must answer, and at
 * the end the process must still be the one we started. Every answer must be a status, never a reset.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../../src/config.js';
import { unusedUdpPortPair } from '../boot/udp-port.js';

const ADMIN = 'fuzz-admin-token-0123456789abcdef';
const work = mkdtempSync(join(tmpdir(), 'dozen-fuzz-'));
let proc: ChildProcess;
let base = '';
let tenant = '';
let output = '';

beforeAll(async () => {
  const cfg = join(work, 'config.json');
  writeFileSync(cfg, JSON.stringify({
    dataDir: join(work, 'data'), api: '127.0.0.1:0', bootIp: '127.0.0.1', subnet: '127.0.0.0/8', adminToken: ADMIN,
    dhcp: { port: await unusedUdpPortPair() }, tftp: { port: 0 }, metadata: { port: 0 }, lab: { enabled: false }, network: { driver: 'none' },
  }));
  proc = spawn(join(REPO_ROOT, 'bin/dozen'), ['serve', '--config', cfg, '--no-lab'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LOG_LEVEL: 'warn' } });
  proc.stdout!.on('data', (d) => (output += d));
  proc.stderr!.on('data', (d) => (output += d));
  base = await new Promise<string>((resolve, reject) => {
    const check = () => {
      const m = /API on (http:\/\/127\.0\.0\.1:\d+)/.exec(output);
      if (m) resolve(m[1]!);
    };
    proc.stdout!.on('data', check);
    proc.once('exit', (code) => reject(new Error(`server exited ${code} before serving:\n${output}`)));
  });
  const t = await call('POST', '/v1/tenants', { token: ADMIN, body: JSON.stringify({ id: 'mallory', name: 'M' }) });
  tenant = JSON.parse(t.body).token;
}, 120_000);

afterAll(async () => {
  proc?.kill('SIGTERM');
  rmSync(work, { recursive: true, force: true });
});

async function call(method: string, path: string, o: { token?: string; body?: string | Buffer; headers?: Record<string, string> } = {}): Promise<{ status: number; body: string }> {
  const r = await fetch(base + path, {
    method,
    headers: { ...(o.token ? { authorization: `Bearer ${o.token}` } : {}), 'content-type': 'application/json', ...o.headers },
    body: o.body as BodyInit | undefined,
    signal: AbortSignal.timeout(30_000),
  });
  return { status: r.status, body: await r.text() };
}

/** A raw request (fetch refuses malformed paths and upgrade headers): the status line, or the error. */
function raw(request: string): Promise<string> {
  return new Promise((resolve) => {
    const s = connect(Number(new URL(base).port), '127.0.0.1');
    let got = '';
    s.on('data', (d) => {
      got += d;
      if (/\r\n\r\n/.test(got)) s.destroy();
    });
    s.on('close', () => resolve(got.split('\r\n')[0] || 'closed without an answer'));
    s.on('error', (e) => resolve(`error ${e.message}`));
    s.setTimeout(15_000, () => s.destroy());
    s.end(request);
  });
}

async function healthy(when: string) {
  const h = await call('GET', '/v1/health').catch((e: Error) => ({ status: 0, body: e.message }));
  expect(h.status, `health after ${when}: ${h.body}\n${output.slice(-2000)}`).toBe(200);
  expect(proc.exitCode, `server exited after ${when}:\n${output.slice(-3000)}`).toBeNull();
}

const BAD_IDS = ['%E0%A4%A', '%', '%ZZ', '..%2F..%2Fetc%2Fpasswd', 'x'.repeat(5000), '%00', '%F0%9F%92%A9', 'a%2Fb', '-1', '0x10', '%C0%AF'];
const BAD_BODIES = ['{"image":', '[]', 'null', '"string"', '123', '{"image":{"$gt":""}}', '{"__proto__":{"admin":true}}', JSON.stringify({ image: 'x'.repeat(100_000) }), JSON.stringify({ sshKeys: Array(10_000).fill('ssh-ed25519 AAAA') }), '{'.repeat(5000) + '}'.repeat(5000)];

describe('every route survives hostile input', () => {
  it('bad paths, bodies, types, upgrade headers and sizes on every OpenAPI route: answered, never fatal', async () => {
    const doc = JSON.parse((await call('GET', '/v1/openapi.json')).body) as { paths: Record<string, Record<string, unknown>> };
    const routes = Object.entries(doc.paths).flatMap(([p, methods]) => Object.keys(methods).map((m) => ({ method: m.toUpperCase(), path: p })));
    expect(routes.length).toBeGreaterThan(20);
    let requests = 0;
    for (const r of routes) {
      const paths = r.path.includes('{') ? BAD_IDS.map((id) => '/v1' + r.path.replace(/\{[^}]+\}/g, id)) : ['/v1' + r.path];
      for (const path of paths) {
        for (const token of [undefined, tenant, ADMIN]) {
          for (const body of r.method === 'GET' || r.method === 'DELETE' ? [undefined] : BAD_BODIES) {
            const auth = token ? `Authorization: Bearer ${token}\r\n` : '';
            const payload = body ?? '';
            const status = await raw(`${r.method} ${path} HTTP/1.1\r\nHost: x\r\n${auth}Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(payload)}\r\nConnection: close\r\n\r\n${payload}`);
            expect(status, `${r.method} ${path}`).toMatch(/^HTTP\/1\.1 [2-5]\d\d /);
            expect(status, `${r.method} ${path} ${payload.slice(0, 80)}`).not.toMatch(/^HTTP\/1\.1 500 /);
            requests++;
          }
        }
        // the same path with WebSocket upgrade headers
        const up = await raw(`GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`);
        expect(up, `upgrade ${path}`).toMatch(/^HTTP\/1\.1 [1-4]\d\d /);
        requests++;
      }
      await healthy(`${r.method} ${r.path}`);
    }
    // console paths with every bad id, and upgrade on the console itself
    for (const id of BAD_IDS) {
      for (const kind of ['leases', 'boards']) {
        const up = await raw(`GET /v1/${kind}/${id}/console HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer ${ADMIN}\r\n\r\n`);
        expect(up, `console ${kind}/${id}`).toMatch(/^HTTP\/1\.1 (400|404) /);
        requests++;
      }
    }
    await healthy('console upgrades');
    console.log(`http fuzz: ${requests} hostile requests over ${routes.length} routes, server alive`);
  }, 600_000);

  it('huge bodies and headers are refused with a status; slow bodies left hanging do not stop others', async () => {
    const big = await call('POST', '/v1/leases', { token: tenant, body: Buffer.alloc(3 << 20, 'a') }).catch((e: Error) => ({ status: 0, body: e.message }));
    expect(big.status).toBe(413);
    const hugeHeader = await raw(`GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(64 * 1024)}\r\n\r\n`);
    expect(hugeHeader).toMatch(/^HTTP\/1\.1 431 /);
    // 20 clients that send half a body and stall
    const slow: Socket[] = [];
    for (let i = 0; i < 20; i++) {
      const s = connect(Number(new URL(base).port), '127.0.0.1');
      s.on('error', () => {});
      s.write(`POST /v1/leases HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${tenant}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"image":`);
      slow.push(s);
    }
    await healthy('20 stalled bodies');
    const ok = await call('GET', '/v1/whoami', { token: tenant });
    expect(JSON.parse(ok.body)).toMatchObject({ role: 'tenant', tenant: 'mallory' });
    for (const s of slow) s.destroy();
    await healthy('the end');
  }, 120_000);
});

/**
 * #18 points 1 and 2, as an anonymous client and a hostile tenant would try them, against a real server
 * with a lab board (QEMU, real U-Boot) and real WebSocket clients:
 *   1. a malformed console URL with upgrade headers does not stop the server;
 *   2. a console socket and an event stream live exactly as long as their grant: release, reimage and
 *      token revocation close them, and the next tenant of the board sees none of the last one's output.
 */
import { execFile } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { CLOSE, SUBPROTOCOL } from '../../src/console/protocol.js';
import type { RunningServer } from '../../src/server.js';
import { startLabServer } from '../helpers/lab-server.js';
import { requireRoot, requireTools } from '../helpers/tools.js';
import { until } from '../helpers/until.js';

let server: RunningServer;

beforeAll(async () => {
  requireRoot();
  requireTools('qemu-system-arm', 'curl');
  server = await startLabServer({ net: 88, prefix: 'dzg', boards: 1 });
}, 300_000);

afterAll(async () => {
  await server?.stop({ labDown: true });
});

async function api(method: string, path: string, body?: unknown, token = server.adminToken) {
  const r = await fetch(`${server.apiUrl}/v1${path}`, { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: r.status, body: (await r.json().catch(() => undefined)) as any };
}

async function settled(jobId: string) {
  const job = await server.leases.settle(jobId);
  expect(job.state, `job ${job.kind}: ${job.error}`).toBe('succeeded');
  return job;
}

/** A console viewer: every byte it got, every control message, and how it closed. */
function openConsole(leaseId: string, token: string) {
  const ws = new WebSocket(`${server.apiUrl.replace('http', 'ws')}/v1/leases/${leaseId}/console`, [SUBPROTOCOL, `bearer.${token}`]);
  const v = { ws, bytes: Buffer.alloc(0), infos: [] as string[], closed: undefined as undefined | { code: number; reason: string } };
  ws.on('message', (data, isBinary) => {
    if (isBinary) v.bytes = Buffer.concat([v.bytes, data as Buffer]);
    else v.infos.push(String(data));
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.on('close', (code, reason) => resolve((v.closed = { code, reason: String(reason) }))));
  const opened = new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('unexpected-response', (_req, res) => reject(new Error(`console refused: ${res.statusCode}`)));
    ws.once('error', reject);
  });
  return { v, opened, closed };
}

/** A promise with a generous bound that names what did not happen (a lost close must fail, not hang). */
function within<T>(p: Promise<T>, what: string, ms = 30_000): Promise<T> {
  return Promise.race([p, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms).unref())]);
}

function curl(args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => execFile('curl', args, { timeout: 30_000 }, (err, out, stderr) => resolve({ code: (err as { code?: number } | null)?.code ?? 0, out: out + stderr })));
}

describe('#18.1 no input ends the process', () => {
  it('a console upgrade with malformed percent-encoding gets 400 and the server keeps serving', async () => {
    const headers = ['-H', 'Connection: Upgrade', '-H', 'Upgrade: websocket', '-H', 'Sec-WebSocket-Version: 13', '-H', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=='];
    for (const path of ['/v1/leases/%E0%A4%A/console', '/v1/boards/%/console', '/v1/leases/%ZZ/console']) {
      const r = await curl(['-s', '-i', '--max-time', '10', ...headers, `${server.apiUrl}${path}`]);
      expect(r.out, path).toMatch(/^HTTP\/1\.1 400 /);
    }
    const health = await fetch(`${server.apiUrl}/v1/health`);
    expect(health.status).toBe(200);
  });
});

describe('#18.2 a console and an event stream live as long as their grant', () => {
  it('release closes the tenant’s console; the next tenant of the board sees nothing of the last one’s boot', async () => {
    const carol = (await api('POST', '/tenants', { id: 'carol', name: 'Carol' })).body.token as string;
    const dave = (await api('POST', '/tenants', { id: 'dave', name: 'Dave' })).body.token as string;

    const c = (await api('POST', '/leases', { image: 'test', board: 'lab-1' }, carol)).body;
    const carolConsole = openConsole(c.lease.id, carol);
    await carolConsole.opened;
    await settled(c.job.id);
    // Carol's board booted with her lease id on its kernel command line (the metadata URL): she saw it.
    await until("Carol's lease id on her console", () => carolConsole.v.bytes.includes(c.lease.id), { timeoutMs: 120_000, intervalMs: 50 });

    const rel = await api('DELETE', `/leases/${c.lease.id}`, undefined, carol);
    expect(rel.status).toBe(202);
    const closed = await within(carolConsole.closed, "close of Carol's console after her release");
    expect(closed.code).toBe(CLOSE.revoked);
    expect(closed.reason).toMatch(/lease released/);
    await settled(rel.body.job.id);

    const d = (await api('POST', '/leases', { image: 'test', board: 'lab-1' }, dave)).body;
    const daveConsole = openConsole(d.lease.id, dave);
    await daveConsole.opened;
    await settled(d.job.id);
    await until("Dave's lease id on his console", () => daveConsole.v.bytes.includes(d.lease.id), { timeoutMs: 120_000, intervalMs: 50 });
    // Dave's view, scrollback included, holds nothing of Carol's boot; Carol is not among his viewers.
    expect(daveConsole.v.bytes.includes(c.lease.id)).toBe(false);
    expect(daveConsole.v.infos.join('\n')).not.toContain('carol');
    // Carol's old socket got none of Dave's boot.
    expect(carolConsole.v.bytes.includes(d.lease.id)).toBe(false);
    // And she cannot open his console, nor hers again.
    await expect(openConsole(d.lease.id, carol).opened).rejects.toThrow(/404/);
    await expect(openConsole(c.lease.id, carol).opened).rejects.toThrow(/404/);

    // Reimage: a new boot with new secrets; the tenant's open socket is closed and may reconnect.
    const re = await api('POST', `/leases/${d.lease.id}/reimage`, {}, dave);
    expect(re.status).toBe(202);
    expect((await within(daveConsole.closed, "close of Dave's console on reimage")).code).toBe(CLOSE.revoked);
    expect(daveConsole.v.closed!.reason).toMatch(/reimaged/);
    const again = openConsole(d.lease.id, dave);
    await again.opened;

    // Token revocation closes both the console socket and the event stream.
    const events = await fetch(`${server.apiUrl}/v1/events`, { headers: { authorization: `Bearer ${dave}` } });
    expect(events.status).toBe(200);
    const reader = events.body!.getReader();
    const first = new TextDecoder().decode((await reader.read()).value);
    expect(first).toContain(': dozen events');
    const daveTokenId = server.store.state.tokens.find((t) => t.tenantId === 'dave')!.id;
    expect((await api('DELETE', `/tokens/${daveTokenId}`)).status).toBe(204);
    expect((await within(again.closed, "close of Dave's console on token revocation")).code).toBe(CLOSE.revoked);
    expect(again.v.closed!.reason).toMatch(/token revoked/);
    let rest = '';
    await within(
      (async () => {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          rest += new TextDecoder().decode(value);
        }
      })(),
      'end of the event stream on token revocation',
    );
    expect(rest).toMatch(/event: end\ndata: \{"reason":"token revoked"\}/);
    await settled(re.body.job.id);

    // The admin's board console stays through all of it.
    const admin = new WebSocket(`${server.apiUrl.replace('http', 'ws')}/v1/boards/lab-1/console`, [SUBPROTOCOL, `bearer.${server.adminToken}`]);
    await new Promise((r, j) => (admin.once('open', r), admin.once('error', j)));
    const rel2 = await api('DELETE', `/leases/${d.lease.id}`);
    await settled(rel2.body.job.id);
    expect(admin.readyState).toBe(WebSocket.OPEN);
    admin.close();
  }, 600_000);
});

/**
 * #18.8 limits, against a real server (no lab: boards with a manual power driver and pty consoles):
 * the body is read only after the caller is authenticated; event streams and console sockets per
 * token are capped; a tenant's live leases are capped; an internal error shows an id, not a detail.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { loadConfig } from '../../src/config.js';
import { SUBPROTOCOL } from '../../src/console/protocol.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { PtyPair } from '../console/pty-pair.js';
import { requireTools } from '../helpers/tools.js';
import { until } from '../helpers/until.js';
import { unusedUdpPortPair } from '../boot/udp-port.js';

const work = mkdtempSync(join(tmpdir(), 'dozen-limits-'));
let server: RunningServer;
let tenant = '';
const ptys: PtyPair[] = [];

beforeAll(async () => {
  requireTools('socat');
  server = await startServer(
    loadConfig(undefined, {
      dataDir: join(work, 'data'), api: '127.0.0.1:0', bootIp: '127.0.0.1', subnet: '127.0.0.0/8',
      dhcp: { port: await unusedUdpPortPair() }, tftp: { port: 0 }, metadata: { port: 0 }, gateway: { listen: '127.0.0.1:0' }, lab: { enabled: false }, network: { driver: 'none' },
      limits: { leasesPerTenant: 2, eventStreamsPerToken: 2, consolesPerToken: 2, viewersPerConsole: 3, powerCallsPerMinute: 3 },
    }),
  );
  for (let i = 1; i <= 3; i++) {
    const pty = new PtyPair(join(work, `b${i}.tty`), join(work, `b${i}.board`));
    await pty.start();
    ptys.push(pty);
    const r = await api('POST', '/boards', { id: `b${i}`, mac: `02:00:00:00:10:0${i}`, model: 'bananapi', arch: 'armv7', ip: `127.0.10.${i}`, serial: pty.line, power: { driver: 'manual' }, image: 'test' });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
  }
  tenant = (await api('POST', '/tenants', { id: 'tina', name: 'Tina' })).body.token;
}, 120_000);

afterAll(async () => {
  await server?.stop();
  for (const p of ptys) await p.stop();
  rmSync(work, { recursive: true, force: true });
});

async function api(method: string, path: string, body?: unknown, token: string | null = server.adminToken) {
  const r = await fetch(`${server.apiUrl}/v1${path}`, {
    method,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: r.status, body: (await r.json().catch(() => undefined)) as any };
}

describe('#18.7 tenants see a short error with an id, never the server\'s detail', () => {
  it("a failed job's operator command (with its SNMP community) reaches the admin, not the tenant", async () => {
    const fail = "echo 'snmpset -v2c -c s3cretCommunity 10.9.9.9 pethPsePortAdminEnable.1.4 i 1: timeout' >&2; exit 3";
    const b = await api('POST', '/boards', { id: 'b9', mac: '02:00:00:00:10:09', model: 'bananapi', arch: 'armv7', ip: '127.0.10.9', power: { driver: 'command', on: fail, off: fail, cycle: fail }, image: 'test' });
    expect(b.status, JSON.stringify(b.body)).toBe(201);
    const rita = (await api('POST', '/tenants', { id: 'rita', name: 'Rita' })).body.token;
    const made = await api('POST', '/leases', { image: 'test', board: 'b9' }, rita);
    expect(made.status).toBe(202);
    const job = await server.leases.settle(made.body.job.id);
    expect(job.state).toBe('failed');
    // the admin has the detail
    const asAdmin = await api('GET', `/jobs/${job.id}`);
    expect(JSON.stringify(asAdmin.body)).toContain('s3cretCommunity');
    // the tenant: job, lease and event stream carry an id, nothing of the command
    const asTenant = await api('GET', `/jobs/${job.id}`, undefined, rita);
    expect(asTenant.status).toBe(200);
    expect(JSON.stringify(asTenant.body)).not.toMatch(/s3cretCommunity|snmpset|10\.9\.9\.9/);
    expect(asTenant.body.error).toMatch(/^power failed \(error [0-9a-f]{8}; the operator has the detail\)$/);
    const lease = await api('GET', `/leases/${made.body.lease.id}`, undefined, rita);
    expect(lease.body.state).toBe('error');
    expect(JSON.stringify(lease.body)).not.toMatch(/s3cretCommunity|snmpset/);
    expect(lease.body.stateReason).toMatch(/\(error [0-9a-f]{8}; the operator has the detail\)$/);
    const all = await api('GET', '/leases', undefined, rita);
    expect(JSON.stringify(all.body)).not.toMatch(/s3cretCommunity/);
    // the same id is the admin's key to the detail
    const id = /error ([0-9a-f]{8})/.exec(asTenant.body.error)![1]!;
    const { errorId } = await import('../../src/auth/redact.js');
    expect(errorId(asAdmin.body.error)).toBe(id);

    // #18.8: power actions are rate-limited per lease (limits.powerCallsPerMinute, 3 here); failed ones count.
    // Each is a job (202); each is let end before the next, so none meets "a job is running" (409). Each fails
    // (the power command fails), the lease's state stays, and the tenant reads no detail of the command.
    const calls: number[] = [];
    for (let i = 0; i < 4; i++) {
      const r = await api('POST', `/leases/${made.body.lease.id}/power`, { action: 'cycle' }, rita);
      calls.push(r.status);
      if (r.status !== 202) continue;
      expect((await server.leases.settle(r.body.job.id)).state).toBe('failed');
      const seen = await api('GET', `/jobs/${r.body.job.id}`, undefined, rita);
      expect(seen.body.error).toMatch(/^power failed \(error [0-9a-f]{8}; the operator has the detail\)$/);
      expect(JSON.stringify(seen.body)).not.toMatch(/s3cretCommunity|snmpset|10\.9\.9\.9/);
    }
    expect(calls.slice(0, 3)).toEqual([202, 202, 202]);
    expect(calls[3]).toBe(429);
    expect((await api('GET', `/leases/${made.body.lease.id}`, undefined, rita)).body).toMatchObject({ state: 'error', stateReason: lease.body.stateReason });
  });
});

describe('limits', () => {
  it('an anonymous body is not read: 401 before any JSON error', async () => {
    expect(await api('POST', '/leases', '{"image":', null)).toMatchObject({ status: 401 });
    expect(await api('POST', '/leases', '{"image":', tenant)).toMatchObject({ status: 400, body: { error: expect.stringMatching(/invalid JSON/) } });
  });

  it('an SSH key line is at most 4 KiB (a lease record cannot be used as storage)', async () => {
    const huge = `ssh-ed25519 ${'A'.repeat(5000)} x`;
    const r = await api('POST', '/leases', { image: 'test', sshKeys: [huge] }, tenant);
    expect(r.status).toBe(400);
    expect(JSON.stringify(r.body)).toMatch(/at most 4096 characters/);
  });

  it('a tenant holds at most limits.leasesPerTenant live leases', async () => {
    const a = await api('POST', '/leases', { image: 'test' }, tenant);
    const b = await api('POST', '/leases', { image: 'test' }, tenant);
    expect([a.status, b.status]).toEqual([202, 202]);
    const c = await api('POST', '/leases', { image: 'test' }, tenant);
    expect(c).toMatchObject({ status: 403, body: { error: 'lease quota reached: tenant tina holds 2 live leases (limits.leasesPerTenant is 2)' } });
    // a free board remains: the refusal is the quota, not a lack of boards
    expect((await api('GET', '/boards')).body.filter((x: { state: string }) => x.state === 'available')).toHaveLength(1);
  });

  it('event streams per token are capped; closing one frees its slot', async () => {
    const open = async () => {
      const ac = new AbortController();
      const r = await fetch(`${server.apiUrl}/v1/events`, { headers: { authorization: `Bearer ${tenant}` }, signal: ac.signal });
      return { status: r.status, close: () => ac.abort() };
    };
    const s1 = await open();
    const s2 = await open();
    expect([s1.status, s2.status]).toEqual([200, 200]);
    const s3 = await open();
    expect(s3.status).toBe(429);
    s1.close();
    let again = 0;
    await until('a stream slot freed by closing one', async () => {
      const s = await open();
      again = s.status;
      s.close();
      return again === 200;
    }, { timeoutMs: 5000, intervalMs: 50, detail: () => `last answer ${again}` });
    expect(again).toBe(200);
    s2.close();
  });

  it('console sockets per token, and viewers per console, are capped', async () => {
    const lease = server.store.state.leases.find((l) => l.tenantId === 'tina')!;
    const sockets: WebSocket[] = [];
    const open = (token = tenant) =>
      new Promise<number>((resolve) => {
        const ws = new WebSocket(`${server.apiUrl.replace('http', 'ws')}/v1/leases/${lease.id}/console`, [SUBPROTOCOL, `bearer.${token}`]);
        sockets.push(ws);
        ws.once('open', () => resolve(101));
        ws.once('unexpected-response', (_q, res) => resolve(res.statusCode!));
        ws.once('error', () => {});
      });
    expect(await open()).toBe(101);
    expect(await open()).toBe(101);
    expect(await open()).toBe(429);
    // another token (the admin) may open one more, then the console is full (3 viewers)
    expect(await open(server.adminToken)).toBe(101);
    expect(await open(server.adminToken)).toBe(429);
    for (const s of sockets) s.terminate();
  });

  it("a tenant's console shows the line's state, never the server's device path; the admin's shows it", async () => {
    const lease = server.store.state.leases.find((l) => l.tenantId === 'tina')!;
    const firstState = (token: string) =>
      new Promise<{ target: string }>((resolve, reject) => {
        const ws = new WebSocket(`${server.apiUrl.replace('http', 'ws')}/v1/leases/${lease.id}/console`, [SUBPROTOCOL, `bearer.${token}`]);
        ws.on('message', (data, isBinary) => {
          const m = isBinary ? null : JSON.parse(String(data));
          if (m?.type === 'state') {
            resolve(m);
            ws.terminate();
          }
        });
        ws.once('unexpected-response', (_q, res) => reject(new Error(`refused: ${res.statusCode}`)));
      });
    const board = server.inventory.get(lease.boardId!);
    expect((await firstState(server.adminToken)).target).toContain(board.serial!);
    const mine = await firstState(tenant);
    expect(mine.target).toBe('serial console');
    expect(JSON.stringify(mine)).not.toContain(work);
  });
});

/**
 * The metrics module on its own: what each event counts, that gauges read the state at scrape time, and
 * both ways of serving /metrics (the API's listener, operators only; an address of its own, no token) over
 * real HTTP. The scrape after a real lease of an emulated board is in test/e2e/lease-lifecycle.test.ts.
 */
import express from 'express';
import type { Server } from 'node:http';
import { afterAll, describe, expect, it } from 'vitest';
import { createMetrics, metricsRouter, reasonLabel, serveMetricsAlone } from '../../src/metrics/index.js';
import type { Job, Lease } from '../../src/store/schema.js';
import { Store } from '../../src/store/store.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { issueToken } from '../../src/auth/tokens.js';
import { HttpError } from '../../src/util/errors.js';

const dir = mkdtempSync(join(tmpdir(), 'metrics-'));
const servers: Server[] = [];
afterAll(() => {
  for (const s of servers) s.close();
  rmSync(dir, { recursive: true, force: true });
});

function parse(text: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const line of text.split('\n')) {
    const hit = /^([a-z_]+(?:\{[^}]*\})?) (\S+)$/.exec(line);
    if (hit) m.set(hit[1]!, Number(hit[2]));
  }
  return m;
}

const lease = (over: Partial<Lease>): Lease => ({ id: 'l1', tenantId: 'ann', kind: 'board', image: 'test', sshKeys: [], hostname: 'h', state: 'active', createdAt: '', ...over }) as Lease;
const step = (name: string, state: string, s: number, e?: number) => ({ name, state, attempts: 1, startedAt: new Date(s).toISOString(), ...(e ? { endedAt: new Date(e).toISOString() } : {}) });

describe('metrics', () => {
  it('counts DHCP replies and ignored requests by a bounded reason, and TFTP transfers, bytes and errors', async () => {
    const m = createMetrics({ leases: () => [], boardStates: () => [], consoleViewers: () => 0 });
    m.onDhcpEvent({ type: 'offer', mac: '02:00:00:00:00:01', ip: '10.0.0.5' });
    m.onDhcpEvent({ type: 'ack', mac: '02:00:00:00:00:01', ip: '10.0.0.5' });
    m.onDhcpEvent({ type: 'ignored', mac: '02:00:00:00:00:02', reason: 'client selected server 10.9.9.9' });
    m.onDhcpEvent({ type: 'ignored', mac: '02:00:00:00:00:03', reason: 'client selected server 10.9.9.8' });
    m.onDhcpEvent({ type: 'unknown', mac: '02:00:00:00:00:04' });
    m.onDhcpEvent({ type: 'release', mac: '02:00:00:00:00:04' });
    const client = { address: '10.0.0.5', port: 1234 };
    m.onTransfer({ client, path: 'a', ok: true, bytes: 1000, ms: 20, blksize: 1468, windowsize: 1 });
    m.onTransfer({ client, path: 'b', ok: false, bytes: 0, ms: 5000, blksize: 512, windowsize: 1, error: 'timed out after 5 retransmits' });
    const v = parse(await m.registry.metrics());
    expect(v.get('dozen_dhcp_replies_total{type="offer"}')).toBe(1);
    expect(v.get('dozen_dhcp_replies_total{type="ack"}')).toBe(1);
    expect(v.get('dozen_dhcp_ignored_total{reason="client_selected_server"}')).toBe(2);
    expect(v.get('dozen_dhcp_ignored_total{reason="unknown"}')).toBe(1);
    expect(v.get('dozen_tftp_transfers_total{result="ok"}')).toBe(1);
    expect(v.get('dozen_tftp_transfers_total{result="error"}')).toBe(1);
    expect(v.get('dozen_tftp_bytes_total')).toBe(1000);
    expect(v.get('dozen_tftp_errors_total{error="timed_out_after_retransmits"}')).toBe(1);
    expect(v.get('dozen_tftp_transfer_seconds_count')).toBe(2);
  });

  it('reason labels drop addresses and numbers, so a client cannot grow the label set', () => {
    expect(reasonLabel('relay 10.1.2.3 outside 10.77.0.0/24')).toBe('relay_outside');
    expect(reasonLabel('unsupported hardware type 6/16')).toBe('unsupported_hardware_type');
    expect(reasonLabel('lookup failed: Error: boom 02:aa:bb:cc:dd:ee')).toBe('lookup_failed');
    expect(reasonLabel(undefined)).toBe('unspecified');
    const many = new Set(Array.from({ length: 500 }, (_, i) => reasonLabel(`addressed to server 10.0.${i >> 8}.${i & 255}`)));
    expect([...many]).toEqual(['addressed_to_server']);
  });

  it('observes each finished job step once, however often the job is published, and counts finished jobs', async () => {
    const m = createMetrics({ leases: () => [], boardStates: () => [], consoleViewers: () => 0 });
    const job = (state: Job['state'], steps: object[]) => ({ type: 'job' as const, tenantId: 'ann', data: { id: 'j1', kind: 'provision', leaseId: 'l1', tenantId: 'ann', state, steps, params: {}, createdAt: '' } });
    m.onBus(job('running', [step('disk', 'running', 0)]));
    m.onBus(job('running', [step('disk', 'done', 0, 2000), step('power', 'running', 2000)]));
    m.onBus(job('running', [step('disk', 'done', 0, 2000), step('power', 'done', 2000, 2500)]));
    m.onBus(job('succeeded', [step('disk', 'done', 0, 2000), step('power', 'done', 2000, 2500)]));
    m.onBus({ type: 'lease', tenantId: 'ann', data: {} });
    const v = parse(await m.registry.metrics());
    expect(v.get('dozen_job_step_seconds_count{kind="provision",step="disk",outcome="done"}')).toBe(1);
    expect(v.get('dozen_job_step_seconds_sum{kind="provision",step="disk",outcome="done"}')).toBe(2);
    expect(v.get('dozen_job_step_seconds_count{kind="provision",step="power",outcome="done"}')).toBe(1);
    expect(v.get('dozen_jobs_total{kind="provision",outcome="succeeded"}')).toBe(1);
  });

  it('gauges read the state when scraped: leases, boards, iSCSI targets, containers per host, viewers', async () => {
    let leases: Lease[] = [lease({ id: 'a', iscsi: {} as Lease['iscsi'] }), lease({ id: 'b', kind: 'container', container: { hostId: 'pi-7', containerId: 'c', memoryMb: 64, cpus: 1 } })];
    const m = createMetrics({ leases: () => leases, boardStates: () => ['active', 'available', 'available'], consoleViewers: () => 3 });
    let v = parse(await m.registry.metrics());
    expect([v.get('dozen_leases{kind="board",state="active"}'), v.get('dozen_leases{kind="container",state="active"}'), v.get('dozen_iscsi_targets')]).toEqual([1, 1, 1]);
    expect([v.get('dozen_boards{state="available"}'), v.get('dozen_boards{state="active"}'), v.get('dozen_boards{state="error"}')]).toEqual([2, 1, 0]);
    expect([v.get('dozen_containers{host="pi-7"}'), v.get('dozen_console_viewers')]).toEqual([1, 3]);
    leases = [lease({ id: 'a', state: 'released' })];
    v = parse(await m.registry.metrics());
    expect(v.get('dozen_container_engines{engine="pi-7",health="up"}')).toBeUndefined(); // no engine source here
    expect([v.get('dozen_leases{kind="board",state="active"}'), v.get('dozen_leases{kind="board",state="released"}'), v.get('dozen_iscsi_targets'), v.get('dozen_containers{host="pi-7"}')]).toEqual([0, 1, 0, undefined]);
  });

  it('engines by health (a marked-down one is drained) and shared boards by engine state', async () => {
    let engines = [{ id: 'pi-7', health: 'up', markedDown: false }, { id: 'sb-1', health: 'down', markedDown: false }, { id: 'sb-2', health: 'up', markedDown: true }];
    const m = createMetrics({ leases: () => [], boardStates: () => [], consoleViewers: () => 0, engines: () => engines, sharedBoards: () => [{ engine: 'ready' }, { engine: 'ready' }, { engine: 'waiting' }] });
    let v = parse(await m.registry.metrics());
    expect([v.get('dozen_container_engines{engine="pi-7",health="up"}'), v.get('dozen_container_engines{engine="sb-1",health="down"}'), v.get('dozen_container_engines{engine="sb-2",health="drained"}')]).toEqual([1, 1, 1]);
    expect([v.get('dozen_shared_boards{engine="ready"}'), v.get('dozen_shared_boards{engine="waiting"}'), v.get('dozen_shared_boards{engine="failed"}')]).toEqual([2, 1, 0]);
    engines = [];
    v = parse(await m.registry.metrics());
    expect(v.get('dozen_container_engines{engine="pi-7",health="up"}')).toBeUndefined();
  });

  it('on the API listener only an operator token reads /metrics', async () => {
    const store = await Store.open(join(dir, 'state.json'));
    await store.update((s) => void s.tenants.push({ id: 'ann', name: 'Ann', createdAt: '' } as never));
    const tenant = (await issueToken(store, 'ann')).token;
    const admin = 'a'.repeat(32);
    const m = createMetrics({ leases: () => [], boardStates: () => [], consoleViewers: () => 0 });
    const app = express();
    app.use(metricsRouter(m.registry, { store, adminToken: admin }));
    app.use(((err, _req, res, _next) => void res.status(err instanceof HttpError ? err.status : 500).json({ error: err.message })) as express.ErrorRequestHandler);
    const s = await new Promise<Server>((r) => { const x = app.listen(0, '127.0.0.1', () => r(x)); });
    servers.push(s);
    const url = `http://127.0.0.1:${(s.address() as { port: number }).port}/metrics`;
    expect((await fetch(url)).status).toBe(401);
    expect((await fetch(url, { headers: { authorization: `Bearer ${tenant}` } })).status).toBe(403);
    expect((await fetch(url, { headers: { authorization: 'Bearer dz_000000000000_nope' } })).status).toBe(401);
    const ok = await fetch(url, { headers: { authorization: `Bearer ${admin}` } });
    expect(ok.status).toBe(200);
    expect(await ok.text()).toContain('# TYPE dozen_dhcp_replies_total counter');
    await store.close();
  });

  it('on an address of its own, /metrics needs no token and nothing else is served there', async () => {
    const m = createMetrics({ leases: () => [], boardStates: () => [], consoleViewers: () => 0 });
    const s = await serveMetricsAlone(m.registry, '127.0.0.1', 0);
    servers.push(s);
    const base = `http://127.0.0.1:${(s.address() as { port: number }).port}`;
    const ok = await fetch(`${base}/metrics`);
    expect(ok.status).toBe(200);
    expect(await ok.text()).toContain('dozen_tftp_bytes_total 0');
    expect((await fetch(`${base}/v1/leases`)).status).toBe(404);
  });
});

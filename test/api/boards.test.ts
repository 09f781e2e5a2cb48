import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Inventory } from '../../src/inventory/boards.js';
import type { BoardEvents } from '../../src/inventory/events.js';
import { apiHarness } from '../helpers/api-harness.js';

let h: Awaited<ReturnType<typeof apiHarness>>;
let inventory: Inventory;
let events: BoardEvents;
let api: (method: string, path: string, body?: unknown, token?: string | null) => Promise<{ status: number; body: any }>;

beforeAll(async () => {
  h = await apiHarness();
  ({ inventory, events, api } = h);
});
afterAll(() => h.close());

const bpi = { id: 'bpi-01', mac: '02:00:00:00:00:01', model: 'bananapi', arch: 'armv7', ip: '10.77.0.101', serial: '/dev/ttyUSB0', power: { driver: 'qemu', qmp: '/run/x.qmp' }, image: 'test' };

describe('boards API', () => {
  it('requires a valid bearer token', async () => {
    expect((await api('GET', '/boards', undefined, null)).status).toBe(401);
    const bad = await api('GET', '/boards', undefined, 'wrong');
    expect(bad.status).toBe(401);
    expect(bad.body.error).toMatch(/invalid token/);
  });

  it('enrolls, shows, patches and removes a board', async () => {
    const created = await api('POST', '/boards', { ...bpi, mac: '02-00-00-00-00-01'.toUpperCase() });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ id: 'bpi-01', mac: '02:00:00:00:00:01', state: 'available' });
    expect((await api('GET', '/boards')).body.map((b: { id: string }) => b.id)).toContain('bpi-01');
    expect((await api('GET', '/boards/bpi-01')).body.ip).toBe('10.77.0.101');
    const patched = await api('PATCH', '/boards/bpi-01', { ip: '10.77.0.102' });
    expect(patched.status).toBe(200);
    expect(patched.body.ip).toBe('10.77.0.102');
    events.add('bpi-01', { type: 'dhcp', message: 'DHCP offer 10.77.0.102' });
    expect((await api('GET', '/boards/bpi-01/events')).body[0].message).toMatch(/offer/);
    expect((await api('DELETE', '/boards/bpi-01')).status).toBe(204);
    expect((await api('GET', '/boards/bpi-01')).status).toBe(404);
    expect((await api('GET', '/boards/bpi-01/events')).status).toBe(404);
  });

  it('refuses a MAC, id or IP enrolled twice with 409', async () => {
    expect((await api('POST', '/boards', bpi)).status).toBe(201);
    const dupMac = await api('POST', '/boards', { ...bpi, id: 'bpi-02', ip: '10.77.0.150' });
    expect(dupMac.status).toBe(409);
    expect(dupMac.body.error).toMatch(/MAC 02:00:00:00:00:01 is already enrolled as board bpi-01/);
    expect((await api('POST', '/boards', { ...bpi, mac: '02:00:00:00:00:99', ip: '10.77.0.150' })).status).toBe(409);
    expect((await api('POST', '/boards', { ...bpi, id: 'bpi-03', mac: '02:00:00:00:00:98' })).status).toBe(409);
    await api('DELETE', '/boards/bpi-01');
  });

  it('refuses an IP outside the subnet, or the server’s own, with 400', async () => {
    const r = await api('POST', '/boards', { ...bpi, ip: '10.78.0.5' });
    expect(r.status).toBe(400);
    expect(r.body.error).toMatch(/outside the boot subnet 10.77.0.0\/24/);
    expect((await api('POST', '/boards', { ...bpi, ip: '10.77.0.1' })).status).toBe(400);
    expect((await api('POST', '/boards', { ...bpi, ip: '10.77.0.255' })).status).toBe(400);
  });

  it('names the bad fields of an invalid body, and rejects invalid JSON', async () => {
    const r = await api('POST', '/boards', { ...bpi, mac: 'zz', arch: 'x86' });
    expect(r.status).toBe(400);
    expect(r.body.details.fields.map((f: { field: string }) => f.field).sort()).toEqual(['arch', 'mac']);
    const j = await api('POST', '/boards', '{"id": ');
    expect(j.status).toBe(400);
    expect(j.body.error).toMatch(/invalid JSON/);
    expect((await api('POST', '/boards', { ...bpi, image: 'nope' })).body.error).toMatch(/unknown image "nope"/);
    expect((await api('PATCH', '/boards/x', { id: 'y' })).status).toBe(400); // ids are immutable
    expect((await api('POST', '/boards', { ...bpi, power: { driver: 'relay9000' } })).body.error).toMatch(/unknown power driver "relay9000" \(known: qemu/);
  });

  it('lists MACs seen on DHCP but not enrolled, and enrolling one removes it', async () => {
    await inventory.noteUnknown('02:00:00:00:aa:01', { vendorClass: 'PXEClient:Arch:00010' });
    const d = await api('GET', '/discovered');
    expect(d.body).toEqual([expect.objectContaining({ mac: '02:00:00:00:aa:01', count: 1, vendorClass: 'PXEClient:Arch:00010' })]);
    expect((await api('POST', '/boards', { ...bpi, id: 'found', mac: '02:00:00:00:aa:01', ip: '10.77.0.160' })).status).toBe(201);
    expect((await api('GET', '/discovered')).body).toEqual([]);
  });
});

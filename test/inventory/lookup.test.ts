/**
 * Inventory.byMac / byIp answer every DHCP packet and TFTP request from an index: these check it follows
 * every change a board can go through (enrol, re-address, remove, a rolled-back write), and that a lookup
 * reads one board whether there are 5 or 5,000 (counted, not timed).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ImageCatalog } from '../../src/images/catalog.js';
import { Inventory } from '../../src/inventory/boards.js';
import { Store } from '../../src/store/store.js';
import { makeImageRoot } from '../helpers/fixtures.js';

let dir: string;
let store: Store;
let inventory: Inventory;
const power = { driver: 'command' as const, on: 'true', off: 'true' };
const mac = (i: number) => `02:00:00:${((i >> 16) & 255).toString(16).padStart(2, '0')}:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`;
const ip = (i: number) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${(i & 255) + 1}`;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'inv-lookup-'));
  store = await Store.open(join(dir, 'state.json'));
  inventory = new Inventory({ store, images: new ImageCatalog([{ dir: makeImageRoot(), sub: 'build' }]), subnet: '10.0.0.0/8', bootIp: '10.255.255.254' });
});
afterAll(async () => {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

it('follows enrolment, a new address, removal and a write that failed', async () => {
  await inventory.create({ id: 'a', mac: mac(1), model: 'bananapi', arch: 'armv7', ip: ip(1), power, image: 'test' });
  expect(inventory.byMac(mac(1))?.id).toBe('a');
  expect(inventory.byIp(ip(1))?.id).toBe('a');
  await inventory.create({ id: 'b', mac: mac(2), model: 'bananapi', arch: 'armv7', ip: ip(2), power, image: 'test' });
  expect([inventory.byMac(mac(2))?.id, inventory.byIp(ip(2))?.id]).toEqual(['b', 'b']);

  await inventory.patch('a', { ip: ip(3) });
  expect(inventory.byIp(ip(1))).toBeUndefined();
  expect(inventory.byIp(ip(3))?.id).toBe('a');

  await inventory.remove('a');
  expect([inventory.byMac(mac(1)), inventory.byIp(ip(3))]).toEqual([undefined, undefined]);
  expect(inventory.byMac(mac(2))?.id).toBe('b'); // moved to position 0

  // A write that throws leaves the state as it was on disk, in a new array: the index follows it.
  await expect(store.update((s) => {
    s.boards = [];
    throw new Error('no');
  })).rejects.toThrow('no');
  expect(inventory.byMac(mac(2))?.id).toBe('b');
  await inventory.remove('b');
  expect(inventory.byMac(mac(2))).toBeUndefined();
});

it('a lookup reads one board, among 5 or among 5,000 (no scan)', async () => {
  // Enrolled straight into the state (5,000 API enrolments would take minutes of fsyncs).
  const board = (i: number) => ({ id: `b${i}`, mac: mac(i), model: 'bananapi', arch: 'armv7' as const, ip: ip(i), power, image: 'test', state: 'available' as const, createdAt: new Date().toISOString() });
  const reads = async (n: number) => {
    await store.update((s) => void (s.boards = Array.from({ length: n }, (_, i) => board(i + 10))));
    // Count the boards the lookups touch: a proxy over the state's array, read-only (test only).
    let touched = 0;
    const state = store.state as { boards: unknown[] };
    const real = state.boards;
    state.boards = new Proxy(real, { get: (t, k, r) => (typeof k === 'string' && /^\d+$/.test(k) && touched++, Reflect.get(t, k, r)) });
    inventory.byMac(mac(10)); // builds the index: reads every board once
    touched = 0;
    for (let k = 0; k < 100; k++) {
      expect(inventory.byMac(mac(10 + n - 1))?.id).toBe(`b${10 + n - 1}`);
      expect(inventory.byIp(ip(10 + k % n))?.id).toBe(`b${10 + k % n}`);
      expect(inventory.byMac('02:ff:ff:ff:ff:ff')).toBeUndefined();
    }
    state.boards = real;
    return touched;
  };
  expect(await reads(5)).toBe(200);
  expect(await reads(5000)).toBe(200);
});

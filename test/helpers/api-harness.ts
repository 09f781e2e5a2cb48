import { mkdtempSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createApp } from '../../src/api/app.js';
import { ImageCatalog } from '../../src/images/catalog.js';
import { ImageImporter } from '../../src/images/import.js';
import { Inventory } from '../../src/inventory/boards.js';
import { BoardEvents } from '../../src/inventory/events.js';
import { Bus } from '../../src/leases/bus.js';
import { LeaseService, type LeaseServiceDeps } from '../../src/leases/service.js';
import { LeaseSignals } from '../../src/leases/waits.js';
import { log } from '../../src/log.js';
import { Store } from '../../src/store/store.js';
import { ConsoleSessions, type ConsoleSessionsOptions } from '../../src/console/index.js';
import type { ContainerLeasePort } from '../../src/containers/lease-port.js';
import { leaseConsoleHooks } from '../../src/leases/console-hooks.js';
import { makeImageRoot } from './fixtures.js';

export const ADMIN = 'admin-token-for-tests-0123456789';

/**
 * The real API over a real store, inventory and lease service — everything but the boot-network
 * servers, for tests of the API's own rules (auth, validation, allocation).
 */
export async function apiHarness(extra: Partial<LeaseServiceDeps> = {}, o: { consoles?: Partial<ConsoleSessionsOptions> } = {}) {
  const store = await Store.open(join(mkdtempSync(join(tmpdir(), 'api-')), 'state.json'));
  const imported = mkdtempSync(join(tmpdir(), 'imported-'));
  const images = new ImageCatalog([{ dir: imported }, { dir: makeImageRoot(), sub: 'build' }]);
  const inventory = new Inventory({ store, images, subnet: '10.77.0.0/24', bootIp: '10.77.0.1' });
  const events = new BoardEvents();
  const bus = new Bus();
  const signals = new LeaseSignals();
  const consoles = new ConsoleSessions({ dataDir: mkdtempSync(join(tmpdir(), 'consoles-')), ...o.consoles });
  const tty = extra.containers && 'connector' in extra.containers ? (id: string) => (extra.containers as ContainerLeasePort).connector(id) : undefined;
  const leases = new LeaseService({ store, inventory, images, events, bus, signals, console: leaseConsoleHooks(consoles, tty), ...extra });
  const importer = new ImageImporter({ catalog: images, dir: imported, log, inUse: () => null });
  const app = createApp({ adminToken: ADMIN, store, inventory, events, images, leases, bus, log, consoles, importer });
  const server: Server = app.listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;

  async function api(method: string, path: string, body?: unknown, token: string | null = ADMIN) {
    const res = await fetch(base + path, {
      method,
      headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: typeof body === 'string' ? body : body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let json: any;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = text;
    }
    return { status: res.status, body: json };
  }

  return { store, images, inventory, events, bus, signals, leases, consoles, server, base, api, close: async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    await consoles.close();
    await store.close();
  } };
}

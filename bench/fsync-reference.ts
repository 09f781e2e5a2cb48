/**
 * The allocation benchmarks' reference (bench/leases.ts, bench/state-growth): an HTTP endpoint that does
 * nothing but one durable state write per request — the floor any allocation that survives kill -9 pays.
 * `journal: false` (default): the write is a whole (tiny) file, temp + fsync + rename + directory fsync, as
 * the store writes a small state. `journal: true`: one fdatasync'd journal line, the store's cheapest
 * durable write, as it writes a large state (src/store/store.ts): the floor for a full rack.
 * `oneByOne: true`: each request's write waits for the last one and is written and fsynced alone — one
 * fsync per request, no group commit: the "fsync-only" reference of issue #13 (what the store cost per
 * request before it committed concurrent changes together). Both other forms group-commit like the store.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import express from 'express';
import { Store } from '../src/store/store.js';

export async function fsyncReference(opts: { journal?: boolean; oneByOne?: boolean } = {}): Promise<{ url: string; close(): Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), 'bench-ref-'));
  const store = await Store.open(join(dir, 'state.json'), { journalAboveBytes: opts.journal ? 0 : Number.MAX_SAFE_INTEGER, verify: false });
  const app = express();
  const write = () => store.update((s) => void s.discovered.push({ mac: '02:00:00:00:00:01', firstSeen: 'x', lastSeen: 'x', count: 0 }));
  let last: Promise<unknown> = Promise.resolve();
  app.post('/w', async (_req, res) => {
    if (opts.oneByOne) {
      const mine = last.then(write);
      last = mine.catch(() => {});
      await mine;
    } else {
      await write();
    }
    res.status(202).json({});
  });
  const srv = app.listen(0, '127.0.0.1');
  await new Promise((r) => srv.once('listening', r));
  return {
    url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}/w`,
    close: async () => {
      await new Promise((r) => srv.close(r));
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

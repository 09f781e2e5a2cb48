/**
 * Transfers through a UDP proxy that drops ~5% and duplicates ~5% of the datagrams in both
 * directions (seeded, see test/helpers/lossy-proxy.ts). Byte-identical results prove the
 * retransmission paths; packet counts prove they don't spiral.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fsHandler } from '../../src/boot/tftp/fs-handler.js';
import { TftpServer, type TransferEvent } from '../../src/boot/tftp/server.js';
import { LossyProxy } from '../helpers/lossy-proxy.js';
import { makeTree, tftpGet, TFTP_ENGINE } from '../helpers/tftp-test-client.js';
import { requireTools } from '../helpers/tools.js';

const SIZES = { hpa: 300_000, win: 2_000_000 };
let files: Map<string, Buffer>;
let root: string;
let outDir: string;
let server: TftpServer;
const events: TransferEvent[] = [];
let transferEnded = (): void => {};

beforeAll(async () => {
  requireTools('tftp');
  ({ files, dir: root } = await makeTree(SIZES));
  outDir = await mkdtemp(join(tmpdir(), 'tftp-lossy-out-'));
  // Short server timeout so losses cost little; many retries so a loaded CI box can't fail it.
  server = new TftpServer({
    address: '127.0.0.1',
    port: 0,
    handler: fsHandler(root),
    engine: TFTP_ENGINE,
    timeoutMs: 100,
    retries: 30,
    onTransfer: (e) => {
      events.push(e);
      transferEnded();
    },
  });
  await server.start();
});
afterAll(async () => {
  await server?.stop();
  await Promise.all([root, outDir].filter(Boolean).map((d) => rm(d, { recursive: true, force: true })));
});

/** Resolves once no transfer is active (checked as each one ends), or fails after a generous timeout. */
function idle(ms = 30_000): Promise<void> {
  if (server.stats.active === 0) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${server.stats.active} transfer(s) still active after ${ms / 1000} s`)), ms);
    transferEnded = () => {
      if (server.stats.active > 0) return;
      clearTimeout(t);
      resolve();
    };
  });
}

async function withProxy<T>(seed: number, fn: (port: number, proxy: LossyProxy) => Promise<T>): Promise<T> {
  const proxy = new LossyProxy({ target: server.address(), seed, drop: 0.05, duplicate: 0.05 });
  const { port } = await proxy.start();
  try {
    return await fn(port, proxy);
  } finally {
    await proxy.stop();
  }
}

describe('through a lossy, duplicating link', () => {
  it('tftp-hpa (windowsize 1) fetches byte-identical', async () => {
    await withProxy(1, async (port, proxy) => {
      const out = join(outDir, 'hpa');
      const res = await new Promise<string>((resolve) =>
        execFile('tftp', ['-m', 'binary', '127.0.0.1', String(port), '-c', 'get', 'hpa', out], { timeout: 55_000 }, (_e, so, se) =>
          resolve(so + se),
        ),
      );
      expect(res).not.toMatch(/Error|timed out/i);
      expect((await readFile(out)).equals(files.get('hpa')!)).toBe(true);
      expect(proxy.stats.dropped).toBeGreaterThan(20);
      expect(proxy.stats.duplicated).toBeGreaterThan(20);
      // ~587 blocks: with every duplicate ACK ignored the server sends far less than 2× that
      expect(proxy.stats.toClient).toBeLessThan(587 * 1.5);
    });
  });

  it.each([
    [1468, 8, 2],
    [512, 16, 3],
    [1468, 4, 4],
  ])('the RFC 7440 test client with blksize %i windowsize %i (seed %i) fetches byte-identical', async (blksize, windowsize, seed) => {
    await withProxy(seed, async (port, proxy) => {
      const r = await tftpGet('127.0.0.1', port, 'win', {
        options: { blksize, windowsize, tsize: 0 },
        timeoutMs: 300,
        retries: 50,
        dallyMs: 1000, // so a lost final ACK is repeated and the server can report success
      });
      expect(r.oack).toMatchObject({ blksize: String(blksize), windowsize: String(windowsize), tsize: String(SIZES.win) });
      expect(r.data.equals(files.get('win')!)).toBe(true);
      expect(proxy.stats.dropped).toBeGreaterThan(10);
      const blocks = Math.ceil(SIZES.win / blksize);
      // go-back-N re-sends at most a window per loss; a rewind loop would blow far past this
      expect(r.dataPackets).toBeLessThan(blocks * 2.5);
    });
  });

  it('left no transfer behind', async () => {
    await idle();
    expect(server.stats.active).toBe(0);
    // The dallying test client makes sure the server hears its final ACK. tftp-hpa does not
    // dally: if the proxy eats its last ACK the server retries, then reports a failure
    // although the client has everything — so its transfer's event is not checked.
    const win = events.filter((e) => e.path === 'win');
    expect(win.map((e) => [e.ok, e.bytes])).toEqual([
      [true, SIZES.win],
      [true, SIZES.win],
      [true, SIZES.win],
    ]);
  });
});

/**
 * Numeric bounds that tests must not assert (they depend on the machine's load), measured here and reported
 * against their targets: a missed target is a finding to look at, never a flaky red test.
 *   - slow-viewer flood: 32 MiB through a pty while one WebSocket viewer stops reading; time, throughput, and the
 *     most the server ever queued for its viewers (target: the 256 KiB bound + one 64 KiB read chunk per viewer);
 *   - console reconnect: a pty line vanishes and comes back at the same path; time until the session is connected
 *     again (target: the backoff's longest delay + 500 ms);
 *   - token expiry: how long after its expiresAt a token is first refused (target 100 ms; polled every 5 ms).
 *
 * Run directly (`npx tsx bench/api-bounds.ts`) for a table, or through bench/run.ts.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { WebSocket } from 'ws';
import { ConsoleSessions } from '../src/console/sessions.js';
import { attachConsoleWebSocket } from '../src/console/ws-bridge.js';
import { apiHarness } from '../test/helpers/api-harness.js';
import { PtyPair } from '../test/console/pty-pair.js';

interface Bound {
  name: string;
  value: number;
  unit: string;
  target: number;
  /** 'max': the value must stay at or under the target; 'min': at or over it. */
  kind: 'max' | 'min';
  hit: boolean;
}
const r2 = (x: number) => Math.round(x * 100) / 100;
const bound = (name: string, value: number, unit: string, kind: 'max' | 'min', target: number): Bound => ({
  name,
  value: r2(value),
  unit,
  target,
  kind,
  hit: kind === 'max' ? value <= target : value >= target,
});

async function until(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const MAX_BUFFERED = 256 * 1024;
const BACKOFF = { initialMs: 100, maxMs: 1000, factor: 2, jitter: 0.1 };

async function consoleBounds(): Promise<Bound[]> {
  const dir = mkdtempSync(join(tmpdir(), 'bench-bounds-'));
  const pair = new PtyPair(join(dir, 'line.tty'), join(dir, 'board.tty'));
  await pair.start();
  let board = await pair.openBoard();
  const sessions = new ConsoleSessions({ dataDir: dir, backoff: BACKOFF });
  const http = createServer();
  await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
  const bridge = attachConsoleWebSocket(http, { sessions, authorize: async (req) => ({ boardId: 'b1', canType: false, who: String(req.headers['x-who']) }), maxBufferedBytes: MAX_BUFFERED });
  const sockets: WebSocket[] = [];
  try {
    await sessions.ensure({ id: 'b1', serial: pair.line });
    await until(() => sessions.state('b1')?.state === 'connected', 10_000, 'line connected');
    const url = `ws://127.0.0.1:${(http.address() as AddressInfo).port}/v1/boards/b1/console`;
    const open = async (who: string) => {
      const ws = new WebSocket(url, { headers: { authorization: 'Bearer bench', 'x-who': who } });
      sockets.push(ws);
      await new Promise((r, j) => ws.once('open', r).once('error', j));
      return ws;
    };
    const fast = await open('fast');
    let got = 0;
    const hash = createHash('sha256');
    fast.on('message', (d, bin) => bin && ((got += (d as Buffer).length), hash.update(d as Buffer)));
    const slow = await open('slow');
    let slowNotice = false;
    slow.on('message', (d, bin) => !bin && JSON.parse(String(d)).event === 'slow' && (slowNotice = true));
    const slowClosed = new Promise<number>((r) => slow.once('close', (code) => r(code)));
    await until(() => sessions.get('b1')!.viewerList().length === 2, 5000, 'both viewers attached');
    slow.pause();
    const start = got;
    const total = 32 << 20;
    const chunk = randomBytes(64 * 1024);
    let peak = 0;
    const sampler = setInterval(() => (peak = Math.max(peak, bridge.stats().bufferedBytes)), 2);
    const t0 = performance.now();
    for (let sent = 0; sent < total; sent += chunk.length) await board.port.asyncWrite(chunk);
    await until(() => got - start >= total, 120_000, 'every byte at the fast viewer');
    const floodMs = performance.now() - t0;
    clearInterval(sampler);
    slow.resume();
    const code = await slowClosed;

    // reconnect: the pty vanishes, fails a few attempts, comes back
    await board.close();
    await pair.stop();
    await until(() => (sessions.state('b1')?.attempts ?? 0) >= 3, 20_000, 'failed attempts while absent');
    const t1 = performance.now();
    await pair.start();
    board = await pair.openBoard();
    await until(() => sessions.state('b1')?.state === 'connected', 20_000, 'reconnected');
    const reconnectMs = performance.now() - t1;

    return [
      bound('slow-viewer flood: 32 MiB to the fast viewer', floodMs, 'ms', 'max', 20_000),
      bound('slow-viewer flood: throughput', total / 1e6 / (floodMs / 1000), 'MB/s', 'min', 2),
      bound('slow-viewer flood: peak bytes queued for viewers', peak, 'bytes', 'max', MAX_BUFFERED + 2 * 65536 + 65536),
      bound('slow-viewer flood: slow viewer told and closed with 4008 (1 = yes)', slowNotice && code === 4008 ? 1 : 0, '', 'min', 1),
      bound('console reconnect after the pty returns', reconnectMs, 'ms', 'max', BACKOFF.maxMs + 500),
    ];
  } finally {
    for (const s of sockets) s.terminate();
    await bridge.close();
    await sessions.close();
    await new Promise((r) => http.close(r));
    await board.close().catch(() => {});
    await pair.stop();
  }
}

async function tokenBounds(): Promise<Bound[]> {
  const h = await apiHarness();
  try {
    await h.api('POST', '/tenants', { id: 'bench', name: 'Bench' });
    const lags: number[] = [];
    for (let i = 0; i < 5; i++) {
      const expiresAt = Date.now() + 300;
      const { token } = (await h.api('POST', '/tenants/bench/tokens', { expiresAt: new Date(expiresAt).toISOString() })).body;
      for (;;) {
        const res = await h.api('GET', '/whoami', undefined, token);
        if (res.status === 401) {
          lags.push(Date.now() - expiresAt);
          break;
        }
        await new Promise((r) => setTimeout(r, 5));
      }
    }
    return [bound('token refused after its expiresAt (worst of 5)', Math.max(...lags), 'ms', 'max', 100)];
  } finally {
    await h.close();
  }
}

export async function run() {
  const bounds = [...(await consoleBounds()), ...(await tokenBounds())];
  return {
    what: 'timing and size bounds kept out of the tests: value vs target, hit or missed',
    bounds,
    missed: bounds.filter((b) => !b.hit).map((b) => b.name),
    ok: bounds.every((b) => b.hit),
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const r = await run();
  console.table(Object.fromEntries(r.bounds.map((b) => [b.name, { value: b.value, unit: b.unit, target: `${b.kind === 'max' ? '≤' : '≥'} ${b.target}`, hit: b.hit ? 'hit' : 'MISSED' }])));
  process.exit(r.ok ? 0 : 1);
}

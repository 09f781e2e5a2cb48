/**
 * What a tenant and an operator see of the server while a rack boots (issue #13 point 2): console viewers
 * attached to boards whose serial lines are busy, and the API asked `GET /v1/boards` every 100 ms, its
 * latency recorded. Runs in the benchmark's own process, outside the server's. Bounded: it stops when
 * told, or after MAX_SAMPLES requests.
 */
import { createServer, type Server, type Socket } from 'node:net';
import WebSocket from 'ws';
import { SUBPROTOCOL } from '../../src/console/protocol.js';

const MAX_SAMPLES = 30_000;
const pct = (xs: number[], p: number) => (xs.length ? [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((xs.length * p) / 100))]! : NaN);
const r1 = (x: number) => Math.round(x * 10) / 10;

/** Serial lines that talk: a TCP server (as ser2net would be) sending a 100-byte line every 100 ms to each board that connects. */
export async function chattySerial(): Promise<{ url: string; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const srv: Server = createServer((s) => {
    sockets.add(s);
    let n = 0;
    const t = setInterval(() => s.write(`[${String(++n).padStart(8)}] kernel: a console line of a booting board, padded to one hundred bytes ....\r\n`.slice(0, 100)), 100);
    s.on('error', () => {});
    s.on('close', () => (clearInterval(t), sockets.delete(s)));
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return {
    url: `tcp://127.0.0.1:${(srv.address() as { port: number }).port}`,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise((r) => srv.close(() => r()));
    },
  };
}

export interface ApiProbeResult {
  getBoards: { n: number; p50Ms: number; p99Ms: number; maxMs: number; errors: number };
  viewers: { attached: number; bytes: number[] };
}

/** Attaches a watch-only viewer to each board's console and polls GET /v1/boards until stop(). */
export async function startApiProbe(apiUrl: string, adminToken: string, consoleBoards: string[]): Promise<{ stop(): Promise<ApiProbeResult> }> {
  const headers = { authorization: `Bearer ${adminToken}` };
  const bytes = consoleBoards.map(() => 0);
  const sockets = await Promise.all(
    consoleBoards.map(
      (id, i) =>
        new Promise<WebSocket>((resolve, reject) => {
          const ws = new WebSocket(`${apiUrl.replace(/^http/, 'ws')}/v1/boards/${id}/console?watch=1`, [SUBPROTOCOL], { headers });
          ws.on('message', (d, binary) => binary && (bytes[i]! += (d as Buffer).length));
          ws.once('open', () => resolve(ws));
          ws.once('error', reject);
        }),
    ),
  );
  const ms: number[] = [];
  let errors = 0;
  let stopping = false;
  const loop = (async () => {
    while (!stopping && ms.length + errors < MAX_SAMPLES) {
      const t = performance.now();
      try {
        const r = await fetch(`${apiUrl}/v1/boards`, { headers });
        await r.arrayBuffer();
        if (r.ok) ms.push(performance.now() - t);
        else errors++;
      } catch {
        errors++;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  return {
    stop: async () => {
      stopping = true;
      await loop;
      const attached = sockets.filter((s) => s.readyState === WebSocket.OPEN).length;
      for (const s of sockets) s.terminate();
      return { getBoards: { n: ms.length, p50Ms: r1(pct(ms, 50)), p99Ms: r1(pct(ms, 99)), maxMs: r1(Math.max(...ms)), errors }, viewers: { attached, bytes } };
    },
  };
}

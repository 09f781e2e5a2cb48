/**
 * Console fan-out: 50 WebSocket viewers on one board while a ~1 MB/s flood with timestamped markers goes
 * through a pty for ~10 s. Checks every viewer got every byte; measures marker latency (write on the
 * "board" end → arrival at a viewer) against the reference of `cat` reading a twin pty fed the same bytes
 * at the same moments; samples the console server's RSS (it runs in its own process).
 *
 * Run directly (`npx tsx bench/console-fanout.ts`) for a table, or through bench/run.ts.
 * Env: BENCH_VIEWERS (50), BENCH_SECONDS (10), BENCH_RATE (1000000 bytes/s).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { WebSocket } from 'ws';
import { ConsoleSessions } from '../src/console/sessions.js';
import { SerialPort } from '../src/console/serial-port.js';
import { attachConsoleWebSocket } from '../src/console/ws-bridge.js';
import { PtyPair } from '../test/console/pty-pair.js';

const VIEWERS = Number(process.env.BENCH_VIEWERS ?? 50);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const RATE = Number(process.env.BENCH_RATE ?? 1_000_000);
const TICK_MS = 10;
const MARK = 0x02; // marker: STX 'M' 8 digits ETX; filler never contains STX

/** Finds markers in a byte stream split at arbitrary points and reports each one's sequence number. */
class MarkerScanner {
  private carry = Buffer.alloc(0);
  bytes = 0;
  constructor(private readonly onMarker: (seq: number) => void) {}
  feed(chunk: Buffer): void {
    this.bytes += chunk.length;
    const buf = this.carry.length ? Buffer.concat([this.carry, chunk]) : chunk;
    let i = 0;
    for (;;) {
      const at = buf.indexOf(MARK, i);
      if (at < 0) {
        this.carry = Buffer.alloc(0);
        return;
      }
      if (at + 11 > buf.length) {
        this.carry = Buffer.from(buf.subarray(at));
        return;
      }
      this.onMarker(Number(buf.toString('latin1', at + 2, at + 10)));
      i = at + 11;
    }
  }
}

function percentile(xs: number[], p: number): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}
const r2 = (x: number) => Math.round(x * 100) / 100;

/** The console server alone in this child process, so its RSS is its own. */
async function serve(line: string): Promise<void> {
  const sessions = new ConsoleSessions({ dataDir: mkdtempSync(join(tmpdir(), 'bench-console-')) });
  await sessions.ensure({ id: 'b1', serial: line });
  const http = createServer((req, res) => {
    if (req.url === '/rss') return void res.end(JSON.stringify({ rss: process.memoryUsage().rss }));
    res.statusCode = 404;
    res.end();
  });
  const bridge = attachConsoleWebSocket(http, { sessions, authorize: async () => ({ boardId: 'b1', canType: false, who: 'viewer' }) });
  await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
  process.stdout.write(`READY ${(http.address() as AddressInfo).port}\n`);
  process.stdin.on('end', async () => {
    await bridge.close();
    await sessions.close();
    process.exit(0);
  });
  process.stdin.resume();
}

export async function run() {
  const dir = mkdtempSync(join(tmpdir(), 'bench-fanout-'));
  const ours = new PtyPair(join(dir, 'line.tty'), join(dir, 'board.tty'));
  const ref = new PtyPair(join(dir, 'ref-line.tty'), join(dir, 'ref-board.tty'));
  const children: ChildProcess[] = [];
  const sockets: WebSocket[] = [];
  const ports: SerialPort[] = [];
  try {
    await ours.start();
    await ref.start();
    const server = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--serve', ours.line], { stdio: ['pipe', 'pipe', 'inherit'], env: { ...process.env, LOG_LEVEL: 'warn' } });
    children.push(server);
    const port = await new Promise<number>((resolve, reject) => {
      let out = '';
      server.stdout!.on('data', (c) => {
        out += c;
        const m = /READY (\d+)/.exec(out);
        if (m) resolve(Number(m[1]));
      });
      server.once('exit', (code) => reject(new Error(`console server exited (${code}) before it was ready`)));
      setTimeout(() => reject(new Error('console server not ready after 20 s')), 20_000).unref();
    });
    const base = `http://127.0.0.1:${port}`;
    const rss = async () => ((await (await fetch(`${base}/rss`)).json()) as { rss: number }).rss;

    const sentAt = new Map<number, number>();
    const now = () => performance.now();
    const wsLat: number[] = [];
    const catLat: number[] = [];
    const viewers = await Promise.all(
      Array.from({ length: VIEWERS }, async () => {
        const ws = new WebSocket(`${base.replace('http', 'ws')}/v1/boards/b1/console`, { headers: { authorization: 'Bearer bench' } });
        sockets.push(ws);
        const scan = new MarkerScanner((seq) => wsLat.push(now() - sentAt.get(seq)!));
        ws.on('message', (data, isBinary) => isBinary && scan.feed(data as Buffer));
        await new Promise((r, j) => ws.once('open', r).once('error', j));
        return scan;
      }),
    );
    // Reference: the same bytes through a twin pty, read by cat in its own process.
    const cat = spawn('cat', [ref.line], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(cat);
    const catScan = new MarkerScanner((seq) => catLat.push(now() - sentAt.get(seq)!));
    cat.stdout.on('data', (c: Buffer) => catScan.feed(c));

    const boardEnds = await Promise.all(
      [ours.board, ref.board].map(async (path) => {
        const p = new SerialPort({ path, baudRate: 115200, lock: false });
        await p.asyncOpen();
        ports.push(p);
        return p;
      }),
    );
    await new Promise((r) => setTimeout(r, 500)); // cat and the viewers settled
    const rssBefore = await rss();
    let rssPeak = rssBefore;
    const sampler = setInterval(() => void rss().then((x) => (rssPeak = Math.max(rssPeak, x)), () => {}), 250);

    const perTick = Math.round((RATE * TICK_MS) / 1000);
    const filler = Buffer.alloc(perTick, 'abcdefghijklmnopqrstuvwxyz0123456789 ');
    let sent = 0;
    const t0 = now();
    const ticks = Math.round((SECONDS * 1000) / TICK_MS);
    let lagMs = 0;
    for (let seq = 0; seq < ticks; seq++) {
      const due = t0 + seq * TICK_MS;
      if (due > now()) await new Promise((r) => setTimeout(r, due - now()));
      else lagMs = Math.max(lagMs, now() - due);
      const chunk = Buffer.from(filler);
      chunk.write(`\x02M${String(seq).padStart(8, '0')}\x03`, 0, 'latin1');
      sentAt.set(seq, now());
      await Promise.all(boardEnds.map((p) => p.asyncWrite(chunk)));
      sent += chunk.length;
    }
    const floodMs = now() - t0;
    const deadline = now() + 15_000;
    while (now() < deadline && (viewers.some((v) => v.bytes < sent) || catScan.bytes < sent)) await new Promise((r) => setTimeout(r, 50));
    clearInterval(sampler);
    const rssAfter = await rss();
    const short = viewers.filter((v) => v.bytes !== sent).length;
    const ws = { p50: percentile(wsLat, 50), p99: percentile(wsLat, 99) };
    const ref50 = percentile(catLat, 50);
    const ref99 = percentile(catLat, 99);
    return {
      what: `${VIEWERS} WebSocket viewers of one board, ${r2((sent / floodMs) * 1000 / 1e6)} MB/s through a pty for ${r2(floodMs / 1000)} s; latency = write on the board end → arrival (markers every ${TICK_MS} ms); reference = cat on a twin pty`,
      bytesSent: sent,
      viewersWithEveryByte: `${VIEWERS - short}/${VIEWERS}`,
      referenceBytes: catScan.bytes,
      latencyMs: {
        viewers: { p50: r2(ws.p50), p99: r2(ws.p99), samples: wsLat.length },
        cat: { p50: r2(ref50), p99: r2(ref99), samples: catLat.length },
        addedP99: r2(ws.p99 - ref99),
        ratioP50: r2(ws.p50 / ref50),
        ratioP99: r2(ws.p99 / ref99),
      },
      serverRssMB: { before: r2(rssBefore / 1e6), peak: r2(rssPeak / 1e6), after: r2(rssAfter / 1e6) },
      writerLagMaxMs: r2(lagMs),
      ok: short === 0 && catScan.bytes === sent,
    };
  } finally {
    for (const s of sockets) s.terminate();
    for (const p of ports) await p.asyncClose();
    for (const c of children) {
      c.stdin?.end();
      c.kill('SIGTERM');
    }
    await ours.stop();
    await ref.stop();
  }
}

if (process.argv[2] === '--serve') {
  await serve(process.argv[3]!);
} else if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const r = await run();
  console.table({
    viewers: { p50_ms: r.latencyMs.viewers.p50, p99_ms: r.latencyMs.viewers.p99, bytes_ok: r.viewersWithEveryByte },
    'cat (reference)': { p50_ms: r.latencyMs.cat.p50, p99_ms: r.latencyMs.cat.p99, bytes_ok: r.referenceBytes === r.bytesSent ? 'yes' : 'no' },
    'ratio viewers/cat': { p50_ms: r.latencyMs.ratioP50, p99_ms: r.latencyMs.ratioP99, bytes_ok: '' },
  });
  console.log(`${r.what}\nadded p99 latency ${r.latencyMs.addedP99} ms; server RSS ${r.serverRssMB.before} → peak ${r.serverRssMB.peak} MB; writer lag max ${r.writerLagMaxMs} ms`);
  process.exit(r.ok ? 0 : 1);
}

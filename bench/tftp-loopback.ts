/**
 * Loopback TFTP throughput: our server vs tftp-hpa's in.tftpd, same clients, same file.
 * N client processes (1, 10, 50) each fetch one 16 MB file at the same time; we take the wall
 * time until the last one exits and check every copy byte for byte. Concurrency 1 is run
 * BENCH_RUNS times (default 5, interleaved) and the median reported.
 *
 * Clients: tftp-hpa `tftp` (RFC 1350, 512-byte blocks, no options: the "default options" case)
 * and curl --tftp-blksize 1468 (the U-Boot-like block size). No installed client speaks
 * windowsize, so this bench cannot compare it; bench/uboot-tftp.ts does with a real U-Boot.
 *
 *   npx tsx bench/tftp-loopback.ts              prints a table
 *   BENCH_MB=4 BENCH_LEVELS=1,10 BENCH_CLIENTS=tftp-hpa npx tsx bench/tftp-loopback.ts
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { fsHandler } from '../src/boot/tftp/fs-handler.js';
import { encodeRrq } from '../src/boot/tftp/packet.js';
import { TftpServer } from '../src/boot/tftp/server.js';

const MB = Number(process.env.BENCH_MB ?? 16);
const LEVELS = (process.env.BENCH_LEVELS ?? '1,10,50').split(',').map(Number);
const CLIENTS = (process.env.BENCH_CLIENTS ?? 'tftp-hpa,curl-1468').split(',') as ClientKind[];
const RUNS_AT_1 = Number(process.env.BENCH_RUNS ?? 5);
const CLIENT_TIMEOUT_MS = 180_000; // per client process: the bench always ends

type ClientKind = 'tftp-hpa' | 'curl-1468';

interface Round {
  server: 'ours' | 'tftp-hpa';
  client: ClientKind;
  concurrency: number;
  seconds: number;
  mbPerSec: number;
  /** Client-side: non-zero exit, error text, or a copy that differs. */
  failures: number;
  /** Server-side: transfers our server counted as failed (timeouts included). */
  serverFailed?: number;
}

function clientArgs(kind: ClientKind, port: number, out: string): [string, string[]] {
  if (kind === 'tftp-hpa') return ['tftp', ['-m', 'binary', '127.0.0.1', String(port), '-c', 'get', 'bench.bin', out]];
  return ['curl', ['-sS', '--max-time', '170', '--tftp-blksize', '1468', '-o', out, `tftp://127.0.0.1:${port}/bench.bin`]];
}

function runClient(kind: ClientKind, port: number, out: string): Promise<{ ok: boolean; text: string }> {
  const [cmd, args] = clientArgs(kind, port, out);
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let text = '';
    p.stdout.on('data', (d) => (text += d));
    p.stderr.on('data', (d) => (text += d));
    const t = setTimeout(() => p.kill('SIGKILL'), CLIENT_TIMEOUT_MS);
    p.on('close', (code) => {
      clearTimeout(t);
      // tftp-hpa exits 0 on errors and reports them as text
      resolve({ ok: code === 0 && !/error|timed out/i.test(text), text });
    });
  });
}

async function round(server: Round['server'], client: ClientKind, port: number, n: number, want: Buffer, outDir: string) {
  const outs = Array.from({ length: n }, (_, i) => join(outDir, `${server}-${i}`));
  const t0 = performance.now();
  const res = await Promise.all(outs.map((o) => runClient(client, port, o)));
  const seconds = (performance.now() - t0) / 1000;
  let failures = 0;
  for (const [i, o] of outs.entries()) {
    const okBytes = res[i]!.ok && (await readFile(o).catch(() => Buffer.alloc(0))).equals(want);
    if (!okBytes) failures++;
    await rm(o, { force: true });
  }
  return { seconds, failures, mbPerSec: (n * want.length) / 1e6 / seconds };
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = dgram.createSocket('udp4');
    s.bind(0, '127.0.0.1', () => {
      const p = s.address().port;
      s.close(() => resolve(p));
    });
  });
}

/** Waits until something answers TFTP on the port (in.tftpd needs a moment to bind). */
async function waitTftp(port: number): Promise<void> {
  const s = dgram.createSocket('udp4');
  try {
    for (let i = 0; i < 50; i++) {
      const answered = new Promise<boolean>((r) => {
        s.once('message', () => r(true));
        setTimeout(() => r(false), 100);
      });
      s.send(encodeRrq('no-such-file'), port, '127.0.0.1');
      if (await answered) return;
    }
    throw new Error(`nothing answers TFTP on 127.0.0.1:${port}`);
  } finally {
    s.close();
  }
}

export async function run(): Promise<object> {
  const dir = await mkdtemp(join(tmpdir(), 'tftp-bench-'));
  // Outputs go to tmpfs when there is one: we measure the network path, not the disk.
  const outDir = await mkdtemp(join((await stat('/dev/shm').catch(() => null)) ? '/dev/shm' : tmpdir(), 'tftp-bench-out-'));
  const want = randomBytes(MB * 1024 * 1024);
  await writeFile(join(dir, 'bench.bin'), want);
  await chmod(dir, 0o755); // in.tftpd drops to an unprivileged user
  await chmod(join(dir, 'bench.bin'), 0o644);

  // Every client here is 127.0.0.1, standing in for many boards: the per-client bound would serialize them.
  const ours = new TftpServer({ address: '127.0.0.1', port: 0, handler: fsHandler(dir), maxTransfers: 256, maxPerClient: 256 });
  let ref: ChildProcess | undefined;
  const rounds: Round[] = [];
  try {
    await ours.start();
    const refPort = await freePort();
    ref = spawn('in.tftpd', ['-L', '-s', dir, '-a', `127.0.0.1:${refPort}`], { stdio: 'ignore' });
    ref.once('error', () => {}); // spawn failure shows up as "nothing answers" below
    await waitTftp(refPort);

    for (const client of CLIENTS) {
      for (const n of LEVELS) {
        // Alternate who goes first, so neither always gets the warmer page cache / CPU.
        const order = n % 2 ? (['ours', 'tftp-hpa'] as const) : (['tftp-hpa', 'ours'] as const);
        // Single transfers are quick and noisy: take the median of a few, interleaved.
        const runs = n === 1 ? RUNS_AT_1 : 1;
        const got: Record<string, Awaited<ReturnType<typeof round>>[]> = { ours: [], 'tftp-hpa': [] };
        const failedBefore = ours.stats.failed;
        for (let i = 0; i < runs; i++) {
          for (const server of order) {
            const port = server === 'ours' ? ours.address().port : refPort;
            got[server]!.push(await round(server, client, port, n, want, outDir));
          }
        }
        for (const server of order) {
          const rs = got[server]!.sort((a, b) => a.mbPerSec - b.mbPerSec);
          rounds.push({
            server,
            client,
            concurrency: n,
            ...rs[Math.floor(rs.length / 2)]!,
            failures: rs.reduce((a, r) => a + r.failures, 0),
            ...(server === 'ours' ? { serverFailed: ours.stats.failed - failedBefore } : {}),
          });
        }
      }
    }
  } finally {
    ref?.kill('SIGTERM');
    await ours.stop();
    await rm(dir, { recursive: true, force: true });
    await rm(outDir, { recursive: true, force: true });
  }

  const table = CLIENTS.flatMap((client) =>
    LEVELS.map((n) => {
      const o = rounds.find((r) => r.server === 'ours' && r.client === client && r.concurrency === n)!;
      const h = rounds.find((r) => r.server === 'tftp-hpa' && r.client === client && r.concurrency === n)!;
      return {
        client,
        concurrency: n,
        oursMBps: +o.mbPerSec.toFixed(1),
        refMBps: +h.mbPerSec.toFixed(1),
        ratio: +(o.mbPerSec / h.mbPerSec).toFixed(2),
        oursFailures: o.failures,
        refFailures: h.failures,
        oursServerFailedTransfers: o.serverFailed ?? 0,
      };
    }),
  );
  return { fileMB: MB, unit: 'aggregate MB/s (1e6 bytes/s), wall clock until the last client exits', table };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const r = (await run()) as { table: object[] };
  console.table(r.table);
}

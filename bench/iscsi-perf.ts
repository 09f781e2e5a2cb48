/**
 * Read throughput over iSCSI (libiscsi's iscsi-perf, sequential 128 KiB reads, 16 in flight) from a
 * lease's disk — a btrfs snapshot of the image — against the image file exported as it is, through
 * our tgtd on loopback, in the same run. Target: the clone within 10% of the image. Also measured:
 * tgtd's backing store opened buffered (the default) and with O_DIRECT (`storage.tgt.directIo`).
 * Bounded: ROUNDS × 2 targets × 2 modes × SECONDS.
 */
import { spawn } from 'node:child_process';
import { closeSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { DISK_STORES } from '../src/storage/open-store.js';
import { TgtExporter, type IscsiTarget } from '../src/storage/tgt-exporter.js';
import { makeLoopFs } from '../test/storage/loop-fs.js';
import { startTestTgt } from '../test/storage/tgt-fixture.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const ROUNDS = Number(process.env.BENCH_RUNS ?? 3);
const GiB = 1024 ** 3;

function writeImage(path: string, bytes: number): void {
  const chunk = randomBytes(16 * 1024 * 1024);
  const fd = openSync(path, 'w');
  try {
    for (let off = 0; off < bytes; off += chunk.length) {
      for (let m = 0; m < chunk.length; m += 1024 * 1024) chunk.writeUInt32LE(off + m, m);
      if (off === 0) chunk.writeUInt16BE(0x55aa, 510);
      writeSync(fd, chunk, 0, chunk.length, off);
    }
  } finally {
    closeSync(fd);
  }
}

/** iscsi-perf for `seconds`, then SIGTERM: it prints its running average, which we take. */
function perf(url: string, initiator: string, seconds: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn('iscsi-perf', ['-i', initiator, '-m', '16', '-b', '256', url], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => child.kill('SIGTERM'), seconds * 1000);
    child.on('error', reject);
    child.on('close', () => {
      clearTimeout(timer);
      const all = [...out.matchAll(/iops average \d+ \((\d+) MB\/s\)/g)];
      if (!all.length) return reject(new Error(`iscsi-perf gave no numbers: ${out.slice(-500)}`));
      resolve(Number(all.at(-1)![1]));
    });
  });
}

export async function run() {
  const fs = makeLoopFs('btrfs', 4096);
  const { daemon, portal } = await startTestTgt();
  try {
    mkdirSync(join(fs.dir, 'src'));
    const image = join(fs.dir, 'src', 'image.img');
    writeImage(image, GiB);
    const store = DISK_STORES.btrfs(join(fs.dir, 'store'));
    const disk = await store.clone({ image: 'bench', path: image }, 'l-perf');
    const initiator = 'iqn.2026-11.cloud.dozen:bench';
    const target = (tid: number, name: string, file: string): IscsiTarget => ({
      tid,
      iqn: `iqn.2026-11.cloud.dozen:bench.${name}`,
      disk: file,
      initiator,
      chapUser: `u-${name}`,
      chapSecret: 'BenchSecret1234567890ab',
    });
    const targets = { lease: target(1, 'lease', disk.path), image: target(2, 'image', image) };
    const results: Record<string, Record<string, number>> = {};
    for (const directIo of [false, true]) {
      const exporter = new TgtExporter(daemon.adm, daemon.portal, { directIo });
      const rates: Record<'lease' | 'image', number[]> = { lease: [], image: [] };
      for (const t of Object.values(targets)) {
        await exporter.remove(t.iqn, t.chapUser);
        await exporter.ensure(t);
      }
      for (let r = 0; r < ROUNDS; r++) {
        // Alternate, so drift on a shared 2-core host affects both alike.
        for (const which of r % 2 ? (['image', 'lease'] as const) : (['lease', 'image'] as const)) {
          const t = targets[which];
          rates[which].push(await perf(`iscsi://${t.chapUser}%${t.chapSecret}@${portal}/${t.iqn}/1`, initiator, SECONDS));
        }
      }
      const lease = median(rates.lease);
      const img = median(rates.image);
      results[directIo ? 'O_DIRECT' : 'buffered (default)'] = { 'lease disk MB/s': lease, 'image file MB/s': img, 'lease / image': Math.round((lease / img) * 100) / 100 };
    }
    return { what: `iscsi-perf sequential read, 128 KiB × 16 in flight, loopback, median of ${ROUNDS} × ${SECONDS} s; 1 GiB image on btrfs`, results };
  } finally {
    await daemon.stop();
    fs.cleanup();
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

if (import.meta.url === `file://${process.argv[1]}`) {
  run().then((r) => {
    console.log(r.what);
    console.table(r.results);
  });
}

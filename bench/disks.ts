/**
 * Lease disk creation time: the btrfs store (snapshot) and the reflink store (XFS, FICLONE) against
 * the copy store, for 1 GiB and 4 GiB images full of data, in one run. The images are imported
 * once per store first (that cost is per image, not per lease); then each clone is timed, from the
 * call to the disk being ready under its id. Target: CoW clones independent of image size, ≤ 100 ms
 * at 4 GiB. Each filesystem is a loop file of its own (sparse, under /var/tmp).
 */
import { closeSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { DISK_STORES } from '../src/storage/open-store.js';
import type { DiskStore, DiskStoreKind, ImageDisk } from '../src/storage/disk-store.js';
import { makeLoopFs, type LoopFs } from '../test/storage/loop-fs.js';

const GiB = 1024 ** 3;
const SIZES = [1, 4];
/** CoW clones are cheap: the median of several; a full copy of 4 GiB is not: once. */
const COW_RUNS = Number(process.env.BENCH_RUNS ?? 5);

/**
 * A raw disk image of `gib` GiB filled with data (an MBR signature, so the store accepts it as a
 * partitioned disk; every MiB differs, so nothing can be deduplicated or left sparse).
 */
function writeImage(path: string, gib: number): void {
  const chunk = randomBytes(16 * 1024 * 1024);
  const fd = openSync(path, 'w');
  try {
    for (let off = 0; off < gib * GiB; off += chunk.length) {
      for (let m = 0; m < chunk.length; m += 1024 * 1024) chunk.writeUInt32LE(off + m, m);
      if (off === 0) chunk.writeUInt16BE(0x55aa, 510);
      writeSync(fd, chunk, 0, chunk.length, off);
    }
  } finally {
    closeSync(fd);
  }
}

async function timeClones(store: DiskStore, src: ImageDisk, runs: number): Promise<number> {
  await store.clone(src, 'warmup'); // imports the image (once per image and store)
  await store.destroy('warmup');
  const ms: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = process.hrtime.bigint();
    await store.clone(src, `l-bench-${i}`);
    ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
    await store.destroy(`l-bench-${i}`);
  }
  return ms.sort((a, b) => a - b)[Math.floor(ms.length / 2)]!;
}

export async function run() {
  const loops: LoopFs[] = [];
  try {
    const btrfs = makeLoopFs('btrfs', 8 * 1024);
    loops.push(btrfs);
    const xfs = makeLoopFs('xfs', 16 * 1024);
    loops.push(xfs);
    const setups: Array<{ kind: DiskStoreKind; fs: LoopFs }> = [
      { kind: 'btrfs', fs: btrfs },
      { kind: 'reflink', fs: xfs },
      { kind: 'copy', fs: xfs },
    ];
    // Each filesystem gets its own copy of the images, so imports are reflinks (btrfs, XFS) rather
    // than cross-filesystem copies; the copy store reads the same XFS files.
    for (const fs of [btrfs, xfs]) {
      mkdirSync(join(fs.dir, 'src'));
      for (const gib of SIZES) writeImage(join(fs.dir, 'src', `${gib}g.img`), gib);
    }
    const results: Record<string, Record<string, number>> = {};
    for (const gib of SIZES) {
      const row: Record<string, number> = {};
      for (const { kind, fs } of setups) {
        const store = DISK_STORES[kind](join(fs.dir, `store-${kind}`));
        const src: ImageDisk = { image: `bench-${gib}g`, path: join(fs.dir, 'src', `${gib}g.img`) };
        row[`${kind} ms`] = round(await timeClones(store, src, kind === 'copy' ? 1 : COW_RUNS));
        await store.removeImage(src.image);
      }
      row['copy / btrfs'] = round(row['copy ms']! / row['btrfs ms']!);
      row['copy / reflink'] = round(row['copy ms']! / row['reflink ms']!);
      results[`${gib} GiB image`] = row;
    }
    return {
      what: `time to create one lease disk (image already imported), median of ${COW_RUNS} for btrfs/reflink, 1 full copy for copy`,
      results,
    };
  } finally {
    for (const l of loops.reverse()) l.cleanup();
  }
}

const round = (x: number) => Math.round(x * 10) / 10;

if (import.meta.url === `file://${process.argv[1]}`) {
  run().then((r) => {
    console.log(r.what);
    console.table(r.results);
  });
}

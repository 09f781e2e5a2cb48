/**
 * Runs once before the suite: removes what a killed earlier run left behind, so no test depends on the
 * last run's clean-up. Only names the tests themselves make are touched:
 *   - network namespaces `dz?-<hex>` (labs, client namespaces) with their processes (QEMU, clients);
 *   - their host-side links (`dz?-<hex>-h`, `dzh<hex>`), which would otherwise hold a lab's subnet;
 *   - loop filesystems under `$TMPDIR/dozen-<kind>-*` and their loop devices;
 *   - nft tables `inet dozencloud_ctl_dz?_…` (a test lab's controller input filter).
 * A lock held for the whole run keeps a second run on this machine from cleaning up the first one's
 * live devices: when the lock is taken, the clean-up is skipped with a warning.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deleteLink, deleteNetns } from '../../src/lab/netns.js';
import { holdRunLock, RUN_LOCK as LOCK } from './run-lock.js';

export const TEST_NETNS = /^dz[a-z]-[0-9a-f]{6,8}$/;
export const TEST_LINK = /^(dz[a-z]-[0-9a-f]{6,8}-h|dz[a-z]-[0-9a-f]{4,6}-h|dzh[0-9a-f]{4,})$/;

function sh(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  } catch {
    return '';
  }
}

export async function cleanLeftovers(): Promise<string[]> {
  const removed: string[] = [];
  const netns = readdirSafe('/run/netns').filter((n) => TEST_NETNS.test(n));
  for (const ns of netns) {
    await deleteNetns(ns);
    removed.push(`netns ${ns}`);
  }
  const links = (JSON.parse(sh('ip', ['-j', 'link', 'show']) || '[]') as Array<{ ifname: string }>).map((l) => l.ifname.split('@')[0]!);
  for (const l of links.filter((x) => TEST_LINK.test(x))) {
    await deleteLink(l).catch(() => {});
    removed.push(`link ${l}`);
  }
  // Controller input filters of test labs (`inet dozencloud_ctl_<lab veth>`), kept fail-closed by a killed server.
  for (const t of sh('nft', ['list', 'tables', 'inet']).split('\n').map((l) => /^table inet (dozencloud_ctl_dz[a-z]_[0-9a-f]+_h)$/.exec(l.trim())).filter(Boolean)) {
    sh('nft', ['delete', 'table', 'inet', t![1]!]);
    removed.push(`nft table inet ${t![1]}`);
  }
  for (const d of readdirSafe(tmpdir()).filter((n) => /^dozen-(btrfs|xfs|ext4)-/.test(n))) {
    const base = join(tmpdir(), d);
    sh('umount', ['-l', join(base, 'mnt')]);
    for (const line of sh('losetup', ['-j', join(base, 'fs.img')]).split('\n').filter(Boolean)) sh('losetup', ['-d', line.split(':')[0]!]);
    rmSync(base, { recursive: true, force: true });
    removed.push(`loop fs ${base}`);
  }
  return removed;
}

function readdirSafe(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/** Unmount whatever is still mounted under `dir`, then remove it without ever crossing into a mount. */
function removeTree(dir: string): void {
  const mounts = readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[1]?.replace(/\\040/g, ' '))
    .filter((m): m is string => !!m && (m === dir || m.startsWith(dir + '/')))
    .sort((a, b) => b.length - a.length);
  for (const m of mounts) sh('umount', ['-l', m]);
  for (const line of sh('losetup', ['-nO', 'NAME,BACK-FILE']).split('\n')) {
    const [dev, file] = line.trim().split(/\s+/);
    if (dev && file && file.startsWith(dir + '/')) sh('losetup', ['-d', dev]);
  }
  sh('rm', ['-rf', '--one-file-system', dir]);
}

export default async function setup(): Promise<() => Promise<void>> {
  // vitest runs the global setup once per project, in one process: do the work once.
  const g = globalThis as { __dozenRunSetup?: Promise<string | null> };
  g.__dozenRunSetup ??= prepareRun();
  const root = await g.__dozenRunSetup;
  return async () => {
    if (root && existsSync(root)) removeTree(root);
  };
}

/**
 * Every test's temporary folders go under one root for this run (TMPDIR, inherited by the workers),
 * removed when the run ends, and by the next run if this one was killed. Mode 1777 like /tmp: tests
 * run helpers as `nobody`, which keep temp files of their own there (tsx's cache).
 */
async function prepareRun(): Promise<string | null> {
  if (process.getuid?.() !== 0) return null; // without root there is nothing of ours to remove, and tests needing root fail on their own
  if (await holdRunLock()) {
    const removed = await cleanLeftovers();
    // roots of runs whose process is gone (a killed run): a live run's root is never touched
    for (const d of readdirSafe(BASE_TMP)) {
      const pid = Number(new RegExp(`^${RUN_PREFIX}(\\d+)-`).exec(d)?.[1]);
      if (!pid || pid === process.pid || alive(pid)) continue;
      removeTree(join(BASE_TMP, d));
      removed.push(`temp root ${d}`);
    }
    if (removed.length) console.log(`[global-setup] removed what an earlier run left: ${removed.join(', ')}`);
  } else {
    console.warn(`[global-setup] another test run holds ${LOCK}: not cleaning leftovers`);
  }
  const root = mkdtempSync(join(BASE_TMP, `${RUN_PREFIX}${process.pid}-`));
  chmodSync(root, 0o1777);
  process.env.TMPDIR = root;
  return root;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

const BASE_TMP = tmpdir();
const RUN_PREFIX = 'dozen-test-run-';

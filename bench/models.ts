/**
 * Lease → login per board model: one lab board of each kind (`virt`, `bpim2u`, `arm64`), each leased
 * the test image with its root on the lease's iSCSI disk, one board at a time (they would share the 2
 * cores), timed from the lease request to `login:` on the board's console, split by job step.
 *
 * Reference, in the same run and on the same emulated machine: QEMU booting the same kernel, initrd and
 * device tree directly (`-kernel`, no firmware, no network, root in the initrd) to the same `login:`.
 * That is the floor under this emulator; what ours adds on top is the board's firmware, DHCP, TFTP and
 * the iSCSI root. The ratio is reference ÷ ours (1.0 would be a network boot that costs nothing).
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT } from '../src/config.js';
import { findModel } from '../src/inventory/models.js';
import { LAB_KINDS } from '../src/lab/kinds.js';
import { startServer } from '../src/server.js';
import { iscsiLabConfig } from '../test/helpers/lab-server.js';
import { holdRunLock, RUN_LOCK } from '../test/helpers/run-lock.js';
import { sessionConsole } from '../test/helpers/serial.js';
import { requireTools } from '../test/helpers/tools.js';
import { makeLoopFs } from '../test/storage/loop-fs.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const KINDS = (process.env.BENCH_MODELS ?? 'virt,bpim2u,arm64').split(',');
const BOOT_MS = 300_000;
const MEMORY_MB = 512;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const ms = (a?: string, b?: string) => (a && b ? Date.parse(b) - Date.parse(a) : 0);
const IMAGE = join(REPO_ROOT, 'images/test/build');

/** The reference: QEMU boots the image's kernel directly on the kind's machine; ms to `login:`. */
async function directBoot(kindName: string): Promise<number> {
  const kind = LAB_KINDS[kindName]!;
  const model = findModel(kind.model)!;
  const manifest = JSON.parse(readFileSync(join(IMAGE, 'manifest.json'), 'utf8'));
  const a = manifest.arches[model.arch];
  const args = [
    ...kind.machine(MEMORY_MB),
    '-kernel', join(IMAGE, a.kernel),
    '-initrd', join(IMAGE, a.initrd),
    ...(model.dtb ? ['-dtb', join(IMAGE, a.dtbs[model.dtb])] : []),
    '-append', [`console=${model.console}`, kind.kernelArgs].filter(Boolean).join(' '),
    '-nic', 'none', '-display', 'none', '-monitor', 'none', '-serial', 'stdio', '-no-reboot',
  ];
  const t0 = Date.now();
  const qemu = spawn(kind.qemu, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  try {
    return await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${kindName} direct boot: no login: in ${BOOT_MS} ms; last output: ${out.slice(-500)}`)), BOOT_MS);
      qemu.stdout.on('data', (d: Buffer) => {
        out = (out + d.toString('latin1')).slice(-4096);
        if (out.includes('login:')) {
          clearTimeout(timer);
          resolve(Date.now() - t0);
        }
      });
      qemu.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`${kindName} direct boot: QEMU exited ${code} before login:; last output: ${out.slice(-500)}`));
      });
    });
  } finally {
    qemu.kill('SIGKILL');
  }
}

export async function run() {
  requireTools('qemu-system-arm', 'qemu-system-aarch64', 'mkimage', 'mkenvimage', 'mcopy', 'tgtd', 'tgtadm', 'mkfs.btrfs');
  execFileSync('bash', [join(REPO_ROOT, 'images/test/build.sh')], { stdio: 'ignore', timeout: 600_000 });
  const work = mkdtempSync(join(tmpdir(), 'bench-models-'));
  const fs = makeLoopFs('btrfs', 1024);
  const lab = KINDS.map((k) => `${k}:1`).join(',');
  const server = await startServer(await iscsiLabConfig({ dataDir: join(work, 'data'), prefix: '10.97.0', boards: lab, netns: `dzq-${randomBytes(3).toString('hex')}`, storageDir: fs.dir, osTimeoutMs: BOOT_MS }));
  const admin = { role: 'admin' as const, tenantId: null, tokenId: null };
  await server.store.update((s) => void s.tenants.push({ id: 'bench', name: 'bench', createdAt: new Date().toISOString() }));
  const rows: Record<string, unknown> = {};
  try {
    for (const [i, kindName] of KINDS.entries()) {
      const kind = LAB_KINDS[kindName]!;
      const boardId = `lab-${i + 1}`;
      const con = sessionConsole(server.consoles, boardId);
      const runs: Array<Record<string, number>> = [];
      const direct: number[] = [];
      try {
        for (let r = 0; r < RUNS; r++) {
          direct.push(await directBoot(kindName));
          const t0 = Date.now();
          const { lease, job } = await server.leases.create(admin, { kind: 'board', image: 'test', model: kind.model, sshKeys: [], tenant: 'bench' });
          if (lease.boardId !== boardId) throw new Error(`${kindName}: the lease got ${lease.boardId}, not ${boardId}`);
          await con.out.waitFor(/DOZEN-TEST-IMAGE ROOT=iscsi /, BOOT_MS, `${boardId} (iSCSI root marker)`);
          await con.out.waitFor('login:', 60_000, `${boardId} (login prompt)`);
          const total = Date.now() - t0;
          const j = server.leases.jobs.get(job.id)!;
          const step = (n: string) => j.steps.find((s) => s.name === n);
          runs.push({
            total,
            'request → power on (server)': ms(j.createdAt, step('power')?.endedAt),
            'power on → DHCP ack (firmware)': ms(step('power')?.endedAt, step('dhcp')?.endedAt),
            'DHCP → kernel fetched (TFTP)': ms(step('dhcp')?.endedAt, step('kernel')?.endedAt),
            'kernel → login: (kernel, iSCSI root, init)': total - ms(j.createdAt, step('kernel')?.endedAt),
          });
          await server.leases.settle((await server.leases.release('system', lease.id, 'bench')).job.id);
        }
      } finally {
        await con.close();
      }
      const keys = Object.keys(runs[0]!);
      const med = Object.fromEntries(keys.map((k) => [k, median(runs.map((x) => x[k]!))]));
      const ref = median(direct);
      rows[kind.model] = {
        boot: findModel(kind.model)!.boot,
        runs: RUNS,
        oursMs: med.total,
        referenceMs: ref,
        ratio: +(ref / med.total!).toFixed(2),
        networkBootCostMs: med.total! - ref,
        medianMs: med,
        allRunsMs: { ours: runs.map((x) => x.total), reference: direct },
      };
    }
  } finally {
    await server.stop({ labDown: true });
    fs.cleanup();
    rmSync(work, { recursive: true, force: true });
  }
  return { reference: 'the same kernel, initrd and DTB booted by QEMU -kernel on the same machine (no firmware, no network, root in the initrd)', models: rows };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  if (!(await holdRunLock())) console.warn(`another test or benchmark run holds ${RUN_LOCK}`);
  run().then((r) => console.log(JSON.stringify(r, null, 2)));
}

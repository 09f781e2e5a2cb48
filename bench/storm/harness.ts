/** Shared by bench/storm.ts and test/storm: the client plan and running the simulator in the storm's namespace. */
import { spawn } from 'node:child_process';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { REPO_ROOT } from '../../src/config.js';
import type { ServedFiles } from './files.js';
import { RELAY_IP, RELAY_IPS, SERVER_IP, type Plan, type StormBoard, type StormResult } from './plan.js';
import { children } from './servers.js';

/** The client's settings: U-Boot's defaults (net/bootp.c, net/tftp.c), blksize 1468, the given window. */
export function makePlan(boards: StormBoard[], served: Pick<ServedFiles, 'files' | 'generated'>, windowsize: number, deadlineMs: number, ports = { dhcp: 67, tftp: 69 }): Plan {
  return {
    serverIp: SERVER_IP,
    relayIp: RELAY_IP,
    dhcpPort: ports.dhcp,
    tftpPort: ports.tftp,
    boards,
    blksize: 1468,
    windowsize,
    tftpTimeoutMs: 5000,
    tftpTimeoutCountMax: 10,
    dhcpFirstTimeoutMs: 250,
    dhcpMaxTimeoutMs: 2000,
    dhcpTotalMs: 28_000,
    dhcpRequestTimeoutMs: 5000,
    deadlineMs,
    files: served.files,
    generated: served.generated,
  };
}

/** Time for a client process to load (node + tsx) before the common start; a late one reports by how much. */
const CLIENT_START_MARGIN_MS = 10_000;

/**
 * Runs the client simulator inside the storm's namespace, its boards spread round-robin over `processes`
 * client processes (each with its own relay address), so that one client core is not what limits a large
 * storm. They start at one common moment; the result is their union, timed from that moment.
 */
export async function runClients(ns: string, dir: string, p: Plan, processes = 1): Promise<StormResult> {
  const k = Math.max(1, Math.min(processes, RELAY_IPS.length, p.boards.length));
  const startAt = k > 1 ? Date.now() + CLIENT_START_MARGIN_MS : undefined;
  const shards = Array.from({ length: k }, (_, i) => ({ ...p, relayIp: RELAY_IPS[i]!, boards: p.boards.filter((_, j) => j % k === i), ...(startAt ? { startAt } : {}) }));
  const results = await Promise.all(shards.map((shard, i) => runClientProcess(ns, dir, shard, i)));
  return {
    boards: results.flatMap((r) => r.boards),
    wallMs: Math.max(...results.map((r) => r.wallMs)),
    clientCpuS: +results.reduce((a, r) => a + r.clientCpuS, 0).toFixed(2),
    // One namespace, one counter: each process saw (nearly) the same interval of it.
    clientRcvbufErrors: Math.max(...results.map((r) => r.clientRcvbufErrors)),
    clientProcesses: k,
    clientStartLateMs: Math.max(...results.map((r) => r.clientStartLateMs ?? 0)),
  };
}

async function runClientProcess(ns: string, dir: string, p: Plan, i: number): Promise<StormResult> {
  const planFile = join(dir, `plan-${i}.json`);
  const outFile = join(dir, `result-${i}.json`);
  await writeFile(planFile, JSON.stringify(p));
  await rm(outFile, { force: true });
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, '--max-old-space-size=4096', '--import', 'tsx', join(REPO_ROOT, 'bench/storm/client.ts'), planFile, outFile], {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'inherit', 'pipe'],
  });
  children.add(child);
  let err = '';
  child.stderr!.on('data', (d) => (err = (err + d).slice(-4000)));
  const t = setTimeout(() => child.kill('SIGKILL'), p.deadlineMs + CLIENT_START_MARGIN_MS + 120_000);
  const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  clearTimeout(t);
  children.delete(child);
  if (code !== 0) throw new Error(`client simulator ${i} exited ${code}: ${err}`);
  return JSON.parse(await readFile(outFile, 'utf8')) as StormResult;
}

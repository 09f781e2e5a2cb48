/** Shared by bench/storm.ts and test/storm: the client plan and running the simulator in the storm's namespace. */
import { spawn } from 'node:child_process';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { REPO_ROOT } from '../../src/config.js';
import type { ServedFiles } from './files.js';
import { RELAY_IP, SERVER_IP, type Plan, type StormBoard, type StormResult } from './plan.js';
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

/** Runs the client simulator inside the storm's namespace. */
export async function runClients(ns: string, dir: string, p: Plan): Promise<StormResult> {
  const planFile = join(dir, 'plan.json');
  const outFile = join(dir, 'result.json');
  await writeFile(planFile, JSON.stringify(p));
  await rm(outFile, { force: true });
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, '--max-old-space-size=4096', '--import', 'tsx', join(REPO_ROOT, 'bench/storm/client.ts'), planFile, outFile], {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'inherit', 'pipe'],
  });
  children.add(child);
  let err = '';
  child.stderr!.on('data', (d) => (err = (err + d).slice(-4000)));
  const t = setTimeout(() => child.kill('SIGKILL'), p.deadlineMs + 120_000);
  const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  clearTimeout(t);
  children.delete(child);
  if (code !== 0) throw new Error(`client simulator exited ${code}: ${err}`);
  return JSON.parse(await readFile(outFile, 'utf8')) as StormResult;
}


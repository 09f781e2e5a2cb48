/**
 * Child process of bench/dhcp-rate.ts: the full DozenCloud server (startServer, lab off, network
 * driver `none`) on the bench's server namespace, with a given set of boards already enrolled.
 * Run as `ip netns exec <ns> node --import tsx bench/dhcp-rate/server.ts <spec.json>` with an IPC
 * channel: it sends {ready, pid} once serving, answers {cmd:'stats'} with the DHCP counters and
 * stops on {cmd:'stop'} (or when the parent goes away).
 *
 * Boards are written into the state file before the server starts, in one store update: enrolling
 * 10,000 boards one by one through Inventory.create costs a full state write (and a structuredClone
 * and a uniqueness scan) per board, which is not what this bench measures. Each board is what
 * Inventory.create would have stored (schema-checked, state `available`).
 */
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { loadConfig } from '../../src/config.js';
import { startServer } from '../../src/server.js';
import { boardSchema, type Board } from '../../src/store/schema.js';
import { Store } from '../../src/store/store.js';

export interface ServerSpec {
  dataDir: string;
  bootIp: string;
  subnet: string;
  boards: Array<{ mac: string; ip: string }>;
}

export type ChildMessage = { ready: true; pid: number; boards: number; startMs: number } | { stats: Record<string, number> } | { error: string };

const send = (m: ChildMessage): void => void process.send?.(m);

async function main(): Promise<void> {
  const spec = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as ServerSpec;
  const t0 = performance.now();
  const createdAt = new Date().toISOString();
  const boards: Board[] = spec.boards.map((b, i) =>
    boardSchema.parse({
      id: `b-${i}`,
      mac: b.mac,
      model: 'bananapi',
      arch: 'armv7',
      ip: b.ip,
      power: { driver: 'command', on: 'true', off: 'true', cycle: 'true' }, // never powered here
      image: 'test',
      state: 'available',
      createdAt,
    }),
  );
  const store = await Store.open(join(spec.dataDir, 'state.json'));
  await store.update((s) => void s.boards.push(...boards));
  await store.close();

  const config = loadConfig(undefined, {
    dataDir: spec.dataDir,
    api: '127.0.0.1:0',
    bootIp: spec.bootIp,
    subnet: spec.subnet,
    lab: { enabled: false },
    network: { driver: 'none' }, // no ports to fence: the bench's boards are MACs only
    tftp: { port: 0 },
    metadata: { port: 0 },
    gateway: { enabled: false },
  });
  const server = await startServer(config);
  let stopping = false;
  const stop = async (): Promise<void> => {
    if (stopping) return;
    stopping = true;
    await server.stop().catch(() => {});
    process.exit(0);
  };
  process.on('message', (m: { cmd?: string }) => {
    if (m.cmd === 'stats') send({ stats: { ...server.dhcp.stats } });
    if (m.cmd === 'stop') void stop();
  });
  process.on('disconnect', () => void stop()); // the parent died: don't linger in its namespace
  process.on('SIGTERM', () => void stop());
  send({ ready: true, pid: process.pid, boards: server.inventory.list().length, startMs: Math.round(performance.now() - t0) });
}

main().catch((err: unknown) => {
  send({ error: String((err as Error)?.stack ?? err) });
  process.exit(1);
});

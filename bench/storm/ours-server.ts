/**
 * Our server in a process of its own (so its CPU and peak RSS can be read from /proc): startServer()
 * with the lab off, the boot IP on the storm's veth, the N boards enrolled through the Inventory (as
 * POST /v1/boards does): state available, image `test`, no lease. Talks to bench/storm.ts over IPC:
 * sends {ready}, answers 'stats', stops on 'stop'.
 *
 *   node --import tsx bench/storm/ours-server.ts '<json: {dataDir, maxTransfers?, boards}>'
 */
import { loadConfig } from '../../src/config.js';
import { startServer } from '../../src/server.js';
import { boardRecord, IMAGE } from './files.js';
import { SERVER_IP, STORM_SUBNET, type StormBoard } from './plan.js';

interface Args {
  dataDir: string;
  /** config tftp.maxTransfers; absent: the shipped default. */
  maxTransfers?: number;
  boards: StormBoard[];
  /** A serial line (tcp://…) for the first CONSOLE_BOARDS boards: consoles with viewers during the storm. */
  consoleSerial?: string;
}

/** Boards with a busy console and a viewer each during the storm (issue #13 point 2 asks for 10). */
const CONSOLE_BOARDS = 10;

const args = JSON.parse(process.argv[2] ?? '{}') as Args;
const send = (m: unknown): void => void process.send?.(m);
if (!process.send) throw new Error('run by bench/storm.ts (IPC channel expected)');

const config = loadConfig(undefined, {
  dataDir: args.dataDir,
  api: '127.0.0.1:0',
  bootIp: SERVER_IP,
  subnet: STORM_SUBNET,
  lab: { enabled: false },
  // The storm's veth is ours alone: nothing to fence.
  network: { driver: 'none' },
  metadata: { port: 0 },
  gateway: { enabled: false },
  ...(args.maxTransfers ? { tftp: { maxTransfers: args.maxTransfers } } : {}),
});
const server = await startServer(config);
const t0 = performance.now();
const consoleBoards: string[] = [];
for (const [i, b] of args.boards.entries()) {
  const { state: _s, createdAt: _c, ...input } = boardRecord(b);
  const serial = args.consoleSerial && i < CONSOLE_BOARDS ? args.consoleSerial : undefined;
  if (serial) consoleBoards.push(b.id);
  await server.inventory.create(serial ? { ...input, serial } : input);
}
const enrollMs = Math.round(performance.now() - t0);
const states = new Set(server.inventory.list().map((b) => b.state));

process.on('message', (m) => {
  if (m === 'stats') send({ stats: { tftp: { ...server.tftp.stats }, dhcp: { ...server.dhcp.stats } } });
  if (m === 'stop') {
    void server.stop().finally(() => process.exit(0));
  }
});
process.on('disconnect', () => void server.stop().finally(() => process.exit(0)));
send({ ready: true, enrollMs, boards: server.inventory.list().length, states: [...states], image: IMAGE, tftp: config.tftp, api: { url: server.apiUrl, token: server.adminToken, consoleBoards } });

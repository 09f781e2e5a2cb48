/**
 * The boot-storm load generator (bench/storm/client.ts, `npm run bench -- storm`) against our server,
 * small: 5 U-Boot-like boards (3 through pxelinux with a DTB, 2 through boot.scr.uimg) enrolled with
 * the test image get their leases through a relay and every file they name, byte for byte, from their
 * own addresses. Our DHCP and TFTP run on free private ports (the relay listens on the DHCP port), so the
 * file does not hold port 67 or 69. Timing is the benchmark's business, not this test's.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { boardRecord, buildServedFiles, type ServedFiles } from '../../bench/storm/files.js';
import { makePlan, runClients } from '../../bench/storm/harness.js';
import { createStormNet, type StormNet } from '../../bench/storm/net.js';
import { SERVER_IP, STORM_SUBNET, stormBoards } from '../../bench/storm/plan.js';
import { requireRoot, requireTools } from '../helpers/tools.js';
import { onPrivatePort } from '../boot/udp-port.js';

const boards = stormBoards(5);
let dir: string;
let net: StormNet | undefined;
let server: RunningServer | undefined;
let served: ServedFiles;
let dhcpPort: number;

beforeAll(async () => {
  requireRoot();
  requireTools('ip');
  dir = await mkdtemp(join(tmpdir(), 'dzstorm-test-'));
  served = await buildServedFiles(join(dir, 'expected'), boards); // what each file must contain
  net = await createStormNet(boards);
  // The server's DHCP sockets: its send socket on SERVER_IP and its receive socket on 0.0.0.0.
  const got = await onPrivatePort(
    2,
    (port) =>
      startServer(
        loadConfig(undefined, {
          dataDir: join(dir, 'data'),
          api: '127.0.0.1:0',
          bootIp: SERVER_IP,
          subnet: STORM_SUBNET,
          lab: { enabled: false },
          network: { driver: 'none' },
          metadata: { port: 0 },
          gateway: { enabled: false },
          dhcp: { port },
          tftp: { port: 0 },
        }),
      ),
    (s) => s.stop(),
  );
  dhcpPort = got.port;
  server = got.value;
  for (const b of boards) {
    const { state: _s, createdAt: _c, ...input } = boardRecord(b);
    await server.inventory.create(input);
  }
}, 60_000);

afterAll(async () => {
  await server?.stop();
  await net?.cleanup();
  if (dir) await rm(dir, { recursive: true, force: true });
});

it('5 boards boot at once through a relay: every file, byte for byte, from their own addresses', async () => {
  const plan = makePlan(boards, served, 16, 20_000, { dhcp: dhcpPort, tftp: server!.tftp.address().port });
  const r = await runClients(net!.ns, dir, plan);
  expect(r.boards.filter((b) => !b.ok).map((b) => `${b.id}: ${b.error}`)).toEqual([]);
  for (const b of r.boards) {
    const route = boards.find((x) => x.id === b.id)!.route;
    // pxe: pxelinux.cfg/01-<mac>, kernel, initrd, DTB; boot.scr: the script, kernel, initrd
    expect(b.files.map((f) => f.path)).toEqual(
      route === 'pxe'
        ? [`pxelinux.cfg/01-${boards.find((x) => x.id === b.id)!.mac.replaceAll(':', '-')}`, 'images/test/vmlinuz', 'images/test/initrd.img', 'images/test/dtbs/sun8i-r40-bananapi-m2-ultra.dtb']
        : ['boot.scr.uimg', 'images/test/vmlinuz', 'images/test/initrd.img'],
    );
    expect(b.files.every((f) => f.blksize === 1468 && f.windowsize === 16)).toBe(true);
  }
}, 30_000);

it('spread over 2 client processes (each its own relay address), the same boards all boot, timed from one start', async () => {
  const plan = makePlan(boards, served, 16, 20_000, { dhcp: dhcpPort, tftp: server!.tftp.address().port });
  const r = await runClients(net!.ns, dir, plan, 2);
  expect(r.clientProcesses).toBe(2);
  expect(r.boards.map((b) => b.id).sort()).toEqual(boards.map((b) => b.id).sort());
  expect(r.boards.filter((b) => !b.ok).map((b) => `${b.id}: ${b.error}`)).toEqual([]);
  // Both processes were up before the common start (a late one would have skewed its boards' times).
  expect(r.clientStartLateMs).toBe(0);
  expect(r.wallMs).toBeGreaterThanOrEqual(Math.max(...r.boards.map((b) => b.ms!)));
}, 60_000);

import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { text } from 'node:stream/consumers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConsoleSessions } from '../../src/console/sessions.js';
import { loadConfig, REPO_ROOT } from '../../src/config.js';
import { powerDriver } from '../../src/power/registry.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { requireRoot, requireTools } from '../helpers/tools.js';
import { openViewer, type TestViewer } from './harness.js';

// A real emulated ARMv7 board (QEMU + Debian's U-Boot) network-boots from our server while its serial line
// (a QEMU pty behind the lab's stable symlink) is served over the console WebSocket.
const BOOT_TIMEOUT = 240_000;
let server: RunningServer;
let sessions: ConsoleSessions;
let early: TestViewer;
const TYPE_DELAY = 15; // the emulated UART has a tiny FIFO

beforeAll(async () => {
  requireRoot();
  requireTools('qemu-system-arm', 'ip', 'mkimage');
  execFileSync('bash', [join(REPO_ROOT, 'images/test/build.sh')], { stdio: 'ignore', timeout: 600_000 });
  const dataDir = mkdtempSync(join(tmpdir(), 'e2e-console-'));
  server = await startServer(
    loadConfig(undefined, {
      dataDir,
      api: '127.0.0.1:0',
      gateway: { listen: '127.0.0.1:0' },
      bootIp: '10.84.0.1',
      subnet: '10.84.0.0/24',
      lab: { enabled: true, boards: 1, netns: `dzc-${randomBytes(3).toString('hex')}`, powerOn: false },
    }),
  );
  // The server's own sessions and WebSocket bridge, as a board's admin sees them.
  sessions = server.consoles;
  await sessions.startLeaseLog('lab-1', 'lease-1');
  early = await openViewer(server.apiUrl, '/v1/boards/lab-1/console', server.adminToken);
  await Promise.all(server.inventory.list().map((b) => powerDriver(b.power).on()));
}, 900_000);

afterAll(async () => {
  early?.ws.terminate();
  await server?.stop({ labDown: true });
});

describe('lab board console over WebSocket', () => {
  it(
    'the boot (U-Boot banner → kernel → login:) arrives on the WebSocket, and a late joiner gets it from the scrollback',
    async () => {
      await early.out.waitFor(/U-Boot 20\d\d/, 60_000, 'lab-1 over WS (U-Boot banner)');
      await early.out.waitFor(/Linux version \d/, 120_000, 'lab-1 over WS (kernel)');
      await early.out.waitFor('login:', BOOT_TIMEOUT, 'lab-1 over WS (login prompt)');
      const late = await openViewer(server.apiUrl, '/v1/boards/lab-1/console', server.adminToken);
      await late.out.waitFor(/U-Boot 20\d\d[\s\S]*Linux version[\s\S]*login:/, 5000, 'late joiner scrollback');
      late.ws.close();
    },
    BOOT_TIMEOUT + 120_000,
  );

  it('a command typed through the WebSocket runs on the board and its output comes back', async () => {
    await early.type('root\n', TYPE_DELAY);
    await early.out.waitFor('root@dozen:~# ', 30_000, 'lab-1 (shell prompt)');
    await early.type('uname -m; echo CONSOLE-$((6*7))\n', TYPE_DELAY);
    await early.out.waitFor('armv7l', 30_000, 'lab-1 (uname output)');
    await early.out.waitFor('CONSOLE-42', 30_000, 'lab-1 (arithmetic only the board’s shell does)');
    const log = await text((await sessions.leaseLog('lease-1'))!);
    expect(log).toMatch(/U-Boot 20\d\d[\s\S]*login:[\s\S]*CONSOLE-42/);
  });

  it(
    'QEMU killed (its pty gone) and restarted: the session reconnects, the viewer stays attached, is told, and sees the new boot',
    async () => {
      const board = server.lab!.boards()[0]!;
      const pid = Number(readFileSync(`${board.qmp}.pid`, 'utf8').trim());
      process.kill(pid, 'SIGKILL');
      const down = await early.waitMessage((m) => m.type === 'state' && m.state === 'disconnected', 30_000, 'disconnected state');
      await server.lab!.up(); // restarts the dead board (paused) and relinks its serial path to the new pty
      const after = early.messages.indexOf(down);
      await early.waitMessage((m) => m.type === 'state' && m.state === 'connected' && early.messages.indexOf(m) > after, 40_000, 'reconnected state');
      await powerDriver(server.inventory.get('lab-1').power).on();
      await early.out.waitFor(/U-Boot 20\d\d/, 60_000, 'lab-1 over WS after restart (U-Boot banner)');
      expect(early.ws.readyState).toBe(early.ws.OPEN);
      expect(sessions.states()['lab-1']).toMatchObject({ state: 'connected', viewers: 1 });
    },
    120_000,
  );
});

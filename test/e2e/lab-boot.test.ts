import { startLabServer } from '../helpers/lab-server.js';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../../src/config.js';
import { powerDriver } from '../../src/power/registry.js';
import { type RunningServer } from '../../src/server.js';
import { sessionConsole, type TestConsole } from '../helpers/serial.js';
import { requireRoot, requireTools } from '../helpers/tools.js';
import { until } from '../helpers/until.js';
import { ip, runInNetns } from '../../src/lab/netns.js';

// Two emulated ARMv7 boards (QEMU virt + Debian's U-Boot) network-boot the test image from our own
// DHCP and TFTP servers, all real: U-Boot's DHCP/TFTP clients, the kernel, busybox's tftp on the board.
const BOOT_TIMEOUT = 240_000;
let server: RunningServer;
let consoles: TestConsole[] = [];

beforeAll(async () => {
  requireRoot();
  requireTools('qemu-system-arm', 'ip', 'mkimage', 'udhcpc');
  execFileSync('bash', [join(REPO_ROOT, 'images/test/build.sh')], { stdio: 'ignore', timeout: 600_000 });
  server = await startLabServer({ net: 79, prefix: 'dze', boards: 2 });
  // Attach to the serial lines before power-on so nothing of the boot is missed.
  consoles = server.lab!.boards().map((b) => sessionConsole(server.consoles, b.id));
  await Promise.all(server.inventory.list().map((b) => powerDriver(b.power, b.id).on()));
}, 900_000);

afterAll(async () => {
  await Promise.all(consoles.map((c) => c.close()));
  await server?.stop({ labDown: true });
});

describe('lab boards network-boot from our DHCP and TFTP servers', () => {
  it(
    'two boards boot in parallel from U-Boot to the image’s login: prompt',
    async () => {
      await Promise.all(
        consoles.map(async (c, i) => {
          const id = `lab-${i + 1}`;
          await c.out.waitFor(/U-Boot 20\d\d/, 60_000, `${id} (U-Boot banner)`);
          await c.out.waitFor(`dozen: board ${id}`, 90_000, `${id} (our boot script)`);
          await c.out.waitFor('DOZEN-TEST-IMAGE READY', BOOT_TIMEOUT, `${id} (image marker)`);
          await c.out.waitFor('login:', 60_000, `${id} (login prompt)`);
        }),
      );
    },
    BOOT_TIMEOUT + 120_000,
  );

  it('records each board’s boot events: DHCP and every file fetched with size and throughput', async () => {
    for (const b of server.inventory.list()) {
      const res = await fetch(`${server.apiUrl}/v1/boards/${b.id}/events`, { headers: { authorization: `Bearer ${server.adminToken}` } });
      const events = (await res.json()) as Array<{ type: string; message: string; details?: Record<string, unknown> }>;
      expect(events.some((e) => e.type === 'dhcp' && /ack/.test(e.message))).toBe(true);
      const kernel = events.find((e) => e.type === 'tftp' && e.details?.path === 'images/test/vmlinuz');
      expect(kernel?.details?.bytes).toBeGreaterThan(1_000_000);
      expect(kernel?.details?.mbps).toBeGreaterThan(0);
      expect(events.some((e) => e.type === 'tftp' && e.details?.path === 'boot.scr.uimg')).toBe(true);
    }
  });

  it('a board plugged into a port nobody attached is not even heard; enrolled with its port, it is attached and served', async () => {
    const ns = server.config.lab.netns;
    const mac = '02:00:00:d1:5c:01';
    await ip(['link', 'add', 'dzu0', 'type', 'veth', 'peer', 'name', 'dzu1'], ns);
    await ip(['link', 'set', 'dzu1', 'master', 'br0', 'up'], ns);
    await ip(['link', 'set', 'dzu0', 'address', mac, 'up'], ns);
    const dhcp = () => runInNetns(ns, 'udhcpc', ['-i', 'dzu0', '-n', '-q', '-f', '-t', '2', '-T', '1', '-s', '/bin/true'], { timeoutMs: 20_000 });
    expect((await dhcp()).code).not.toBe(0); // no lease for a stranger
    const admin = { authorization: `Bearer ${server.adminToken}`, 'content-type': 'application/json' };
    // Its port is closed (src/network): not even its DHCP reached the controller, so it is not "discovered".
    const seen = await (await fetch(`${server.apiUrl}/v1/discovered`, { headers: admin })).json();
    expect((seen as Array<{ mac: string }>).map((d) => d.mac)).not.toContain(mac);
    // Enrolled with its port: the server attaches it, and the same request is answered with its reserved address.
    const enrol = await fetch(`${server.apiUrl}/v1/boards`, {
      method: 'POST',
      headers: admin,
      body: JSON.stringify({ id: 'stranger', mac, model: 'qemu-virt', arch: 'armv7', ip: '10.79.0.150', port: 'dzu1', power: { driver: 'manual' }, image: 'test' }),
    });
    expect(enrol.status, await enrol.clone().text()).toBe(201);
    await until('the stranger attached', () => server.network.driver.ports().some((p) => p.boardId === 'stranger'), { timeoutMs: 10_000, intervalMs: 50 });
    expect((await dhcp()).code).toBe(0);
    expect((await fetch(`${server.apiUrl}/v1/boards/stranger`, { method: 'DELETE', headers: admin })).status).toBe(204);
    await until('the stranger detached', () => !server.network.driver.ports().some((p) => p.boardId === 'stranger'), { timeoutMs: 10_000, intervalMs: 50 });
    await ip(['link', 'delete', 'dzu1'], ns);
  });

  it('board A may fetch its own boot script but is refused board B’s', async () => {
    const a = consoles[0]!;
    await a.type('root\n');
    await a.out.waitFor('root@dozen:~# ', 30_000, 'lab-1 (shell prompt)');
    await a.type('uname -m; tftp -g -r boot.scr.uimg -l /tmp/own 10.79.0.1 && echo OWN-OK\n');
    await a.out.waitFor('armv7l', 30_000, 'lab-1 (uname)');
    await a.out.waitFor('OWN-OK', 30_000, 'lab-1 (own boot script)');
    await a.type('tftp -g -r boards/lab-2/boot.scr.uimg -l /tmp/other 10.79.0.1 || echo OTHER-REFUSED\n');
    await a.out.waitFor(/Access violation|not lab-1's file/, 30_000, 'lab-1 (TFTP error packet for board B’s script)');
    await a.out.waitFor('OTHER-REFUSED', 30_000, 'lab-1 (board B’s boot script refused)');
    await a.type('ls /tmp/other 2>&1 || echo OTHER-ABSENT\n');
    await a.out.waitFor(/OTHER-ABSENT|No such file/, 30_000, 'lab-1 (nothing written)');
  });
});

/**
 * A tenant's private network, end to end in the lab (#11): alice leases lab-1 and lab-2, carol leases
 * lab-3, all through the `linux-bridge` driver the lab gets by default. Alice's two boards reach each
 * other; carol's board reaches neither, although it knows their MACs (its frames really leave it).
 * The same at the bridge alone, with namespaces for boards: test/network/bridge-attacks.test.ts (f).
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../../src/config.js';
import type { RunningServer } from '../../src/server.js';
import { startLabServer } from '../helpers/lab-server.js';
import { runOnConsole, sessionConsole, type TestConsole } from '../helpers/serial.js';
import { requireRoot, requireTools } from '../helpers/tools.js';

const BOOT_MS = 240_000;
let server: RunningServer;
const cons: Record<string, TestConsole> = {};
const tokens: Record<string, string> = {};

async function api(method: string, path: string, body?: unknown, token = server.adminToken) {
  const r = await fetch(`${server.apiUrl}/v1${path}`, { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: r.status, body: (await r.json().catch(() => undefined)) as any };
}

const board = (id: string) => server.lab!.boards().find((b) => b.id === id)!;
const sh = (id: string, cmd: string, timeoutMs = 60_000) => runOnConsole(cons[id]!, cmd, { what: id, timeoutMs });

beforeAll(async () => {
  requireRoot();
  requireTools('qemu-system-arm', 'ip', 'nft', 'bridge', 'mkimage');
  execFileSync('bash', [join(REPO_ROOT, 'images/test/build.sh')], { stdio: 'ignore', timeout: 600_000 });
  server = await startLabServer({ net: 91, prefix: 'dzp', boards: 3 });
  for (const id of ['lab-1', 'lab-2', 'lab-3']) cons[id] = sessionConsole(server.consoles, id);
  for (const t of ['alice', 'carol']) tokens[t] = (await api('POST', '/tenants', { id: t, name: t })).body.token;
}, 900_000);

afterAll(async () => {
  await server?.stop({ labDown: true });
});

describe("a tenant's private network on the lab's boot network", () => {
  it('alice\'s two boards reach each other; carol\'s board reaches neither; release ends the network', async () => {
    const leases: Array<{ tenant: string; id: string }> = [];
    for (const [tenant, id] of [['alice', 'lab-1'], ['alice', 'lab-2'], ['carol', 'lab-3']] as const) {
      const r = await api('POST', '/leases', { image: 'test', board: id }, tokens[tenant]);
      expect(r.status, JSON.stringify(r.body)).toBe(202);
      leases.push({ tenant, id: r.body.lease.id });
    }
    await Promise.all(
      ['lab-1', 'lab-2', 'lab-3'].map(async (id) => {
        await cons[id]!.out.waitFor('login:', BOOT_MS, `${id} (login prompt)`);
        await cons[id]!.type('root\n');
        await cons[id]!.out.waitFor('# ', 30_000, `${id} (shell)`);
      }),
    );
    expect((await server.network.state()).networks).toEqual([
      { id: 'tenant-alice', boards: ['lab-1', 'lab-2'] },
      { id: 'tenant-carol', boards: ['lab-3'] },
    ]);
    const [b1, b2] = [board('lab-1'), board('lab-2')];
    const listen = () => sh('lab-2', '(nc -l -p 7000 -e echo hello-from-lab-2 &)');
    // Within alice's network: ping and TCP from lab-1 to lab-2.
    await listen();
    expect(await sh('lab-1', `ping -c 2 -W 2 ${b2.ip} >/dev/null && echo PING-ANSWERED || echo PING-UNANSWERED`, 30_000)).toContain('PING-ANSWERED');
    expect(await sh('lab-1', `timeout 5 nc ${b2.ip} 7000 </dev/null`, 30_000)).toContain('hello-from-lab-2');
    // From carol's lab-3, with the MACs pinned so its frames leave it: nothing reaches either board.
    await listen();
    await sh('lab-3', `arp -s ${b1.ip} ${b1.mac}; arp -s ${b2.ip} ${b2.mac}`);
    expect(await sh('lab-3', `ping -c 2 -W 2 ${b1.ip} >/dev/null && echo PING-ANSWERED || echo PING-UNANSWERED`, 30_000)).toContain('PING-UNANSWERED');
    expect(await sh('lab-3', `ping -c 2 -W 2 ${b2.ip} >/dev/null && echo PING-ANSWERED || echo PING-UNANSWERED`, 30_000)).toContain('PING-UNANSWERED');
    expect(await sh('lab-3', `timeout 5 nc ${b2.ip} 7000 </dev/null; echo END`, 30_000)).not.toContain('hello-from-lab-2');
    // Marker: the listener carol could not reach still answers alice's other board.
    expect(await sh('lab-1', `timeout 5 nc ${b2.ip} 7000 </dev/null`, 30_000)).toContain('hello-from-lab-2');
    for (const l of leases) {
      const rel = await api('DELETE', `/leases/${l.id}`, undefined, tokens[l.tenant]);
      expect((await server.leases.settle(rel.body.job.id)).state).toBe('succeeded');
    }
    expect((await server.network.state()).networks).toEqual([]);
  }, 600_000);
});

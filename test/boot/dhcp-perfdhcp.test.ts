/**
 * kea's perfdhcp (2.2) runs DORA exchanges from inside a namespace against the discovery
 * pool. perfdhcp acts as a relay (giaddr = its own address), so replies are unicast back to it;
 * `-L`/`-N` put both ends on a random port pair away from 67. The run is bounded (`-n`), and
 * `-W` makes perfdhcp wait for the last replies instead of counting them as drops.
 * `-D <max-drop>` is not used: perfdhcp 2.2 rejects `-D 0`, and `-D 1` aborts within milliseconds
 * (exit 3) counting the first exchange still in flight as a drop. We check from its report that
 * every exchange was answered, at a modest rate: this is a behaviour test. The load run (1000
 * exchanges at 200/s, 0 drops) is a bound in `npm run bench` (bench/boot-bounds.ts).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DhcpServer, type DhcpEvent } from '../../src/boot/dhcp/server.js';
import { randomMac, runInNetns } from '../../src/lab/netns.js';
import { createVethLab, type VethLab } from '../helpers/netns-fixture.js';
import { requireRoot, requireTools } from '../helpers/tools.js';
import { onPrivatePort } from './udp-port.js';

const CLIENTS = 50;
const EXCHANGES = 100;
const RATE = 20; // per second: 5 s, far from any load limit

let lab: VethLab;
let server: DhcpServer;
let port: number;
const counts: Record<string, number> = {};
const giaddrs = new Set<string>();

beforeAll(async () => {
  requireRoot();
  requireTools('ip', 'perfdhcp');
  lab = await createVethLab({ mac: randomMac(), clientAddress: true });
  const make = (p: number) =>
    new DhcpServer({
      serverAddress: lab.serverAddress,
      port: p,
      subnet: lab.subnet,
      router: lab.serverAddress,
      pool: { start: `${lab.prefix}.10`, end: `${lab.prefix}.250` }, // 241 addresses for the clients
      lookup: async () => null,
      onEvent: (ev: DhcpEvent) => {
        counts[ev.type] = (counts[ev.type] ?? 0) + 1;
        if (ev.info) giaddrs.add(ev.info.giaddr);
      },
    });
  // its two sockets (lab address + 0.0.0.0), alone on their port; perfdhcp binds it in its namespace
  ({ port, value: server } = await onPrivatePort(
    2,
    async (p) => {
      const s = make(p);
      await s.start();
      return s;
    },
    (s) => s.stop(),
  ));
});

afterAll(async () => {
  await server?.stop();
  await lab?.cleanup();
});

/** perfdhcp prints one block per exchange type: "***Statistics for: DISCOVER-OFFER***" … "drops: N". */
function parseStats(out: string): Record<string, { sent: number; received: number; drops: number }> {
  const res: Record<string, { sent: number; received: number; drops: number }> = {};
  for (const m of out.matchAll(/\*\*\*Statistics for: (\S+)\*\*\*([\s\S]*?)(?=\*\*\*|$)/g)) {
    const num = (k: string): number => Number(new RegExp(`${k}: (\\d+)`).exec(m[2]!)?.[1] ?? NaN);
    res[m[1]!] = { sent: num('sent packets'), received: num('received packets'), drops: num('drops') };
  }
  return res;
}

describe('dhcp server under perfdhcp load', () => {
  it(`answers every one of ${EXCHANGES} DORA exchanges from ${CLIENTS} clients (${RATE}/s)`, async () => {
    const args = ['-4', '-l', `${lab.prefix}.2`, '-L', String(port), '-N', String(port), '-r', String(RATE), '-R', String(CLIENTS), '-n', String(EXCHANGES), '-W', '2000000', '-x', 'e', lab.serverAddress];
    const r = await runInNetns(lab.ns, 'perfdhcp', args, { timeoutMs: 45_000 });
    const stats = parseStats(r.stdout);
    expect(r.timedOut).toBe(false);
    expect(stats['DISCOVER-OFFER'], r.stdout + r.stderr).toEqual({ sent: EXCHANGES, received: EXCHANGES, drops: 0 });
    expect(stats['REQUEST-ACK']).toEqual({ sent: EXCHANGES, received: EXCHANGES, drops: 0 });
    expect(r.code, 'perfdhcp exit status 0 = every exchange completed').toBe(0);
    expect(counts).toMatchObject({ offer: EXCHANGES, ack: EXCHANGES });
    expect(counts.nak ?? 0).toBe(0);
    expect([...giaddrs]).toEqual([`${lab.prefix}.2`]); // perfdhcp relays; replies went to giaddr:port
    expect(server.stats).toMatchObject({ offers: EXCHANGES, acks: EXCHANGES, malformed: 0 });
  });
});

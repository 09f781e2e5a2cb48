/**
 * #18.5: a board that floods DHCP with random MACs must not starve real boards. The real DHCP server
 * with the server's own lookup (inventory + durable state file), over loopback through a relay socket
 * (./../boot/udp-port.ts keeps the port ours alone). A real board's DISCOVERs, interleaved with 5,000
 * from random MACs, are all answered — retransmitted like a real client when a reply is slow — and the
 * unknown MACs cost about one state write a second, not one each.
 */
import dgram from 'node:dgram';
import { randomBytes, randomInt } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { DhcpServer } from '../../src/boot/dhcp/server.js';
import { MsgType, Opt, decodePacket, encodePacket, newRequest } from '../../src/boot/dhcp/packet.js';
import { ImageCatalog } from '../../src/images/catalog.js';
import { Inventory } from '../../src/inventory/boards.js';
import { Store } from '../../src/store/store.js';
import { makeImageRoot } from '../helpers/fixtures.js';
import { until } from '../helpers/until.js';
import { onPrivatePort } from '../boot/udp-port.js';

const work = mkdtempSync(join(tmpdir(), 'dozen-dhcp-flood-'));
let store: Store;
let inventory: Inventory;
let server: DhcpServer;
let relay: dgram.Socket;
let port = 0;
let writes = 0;
const BOARD_MAC = '02:00:00:00:77:01';
const replies = new Map<number, number>(); // xid → message type

beforeAll(async () => {
  store = await Store.open(join(work, 'state.json'));
  const images = new ImageCatalog([{ dir: makeImageRoot(), sub: 'build' }]);
  inventory = new Inventory({ store, images, subnet: '127.0.0.0/8', bootIp: '127.0.0.1' });
  await inventory.create({ id: 'real-1', mac: BOARD_MAC, model: 'bananapi', arch: 'armv7', ip: '127.0.77.1', power: { driver: 'manual' }, image: 'test' });
  const update = store.update.bind(store);
  store.update = ((fn: Parameters<Store['update']>[0]) => (writes++, update(fn))) as Store['update'];
  ({ port, value: { server, relay } } = await onPrivatePort(
    3,
    async (p) => {
      const srv = new DhcpServer({
        serverAddress: '127.0.0.1',
        port: p,
        subnet: '127.0.0.0/8',
        // the server's own lookup (src/server.ts): unknown MACs are recorded, never awaited
        lookup: async (info) => {
          const board = inventory.byMac(info.mac);
          if (!board) {
            void inventory.noteUnknown(info.mac).catch(() => {});
            return null;
          }
          return { ip: board.ip, hostname: board.id, bootFile: 'boot.scr.uimg', nextServer: '127.0.0.1' };
        },
      });
      await srv.start();
      const r = dgram.createSocket({ type: 'udp4', reuseAddr: true });
      await new Promise<void>((res) => r.bind({ address: '127.0.0.2', port: p }, res));
      r.setRecvBufferSize(4 << 20);
      return { server: srv, relay: r };
    },
    async (v) => {
      v.relay.close();
      await v.server.stop();
    },
  ));
  relay.on('message', (b) => {
    try {
      const p = decodePacket(b);
      replies.set(p.xid, p.options.get(Opt.MSG_TYPE)?.[0] ?? 0);
    } catch {
      /* not a reply */
    }
  });
}, 60_000);

afterAll(async () => {
  relay?.close();
  await server?.stop();
  await store?.close();
  rmSync(work, { recursive: true, force: true });
});

function send(mac: string, xid: number): void {
  const p = newRequest(mac, xid, MsgType.DISCOVER);
  p.giaddr = '127.0.0.2';
  relay.send(encodePacket(p), port, '127.0.0.1');
}

it('5,000 DISCOVERs from random MACs: every real board DISCOVER is answered; about one state write a second', async () => {
  const t0 = Date.now();
  const writesBefore = writes;
  const boardXids: number[] = [];
  let xid = randomInt(1, 2 ** 30);
  for (let i = 0; i < 5000; i++) {
    send(`02:${randomBytes(5).toString('hex').match(/../g)!.join(':')}`, xid++);
    if (i % 100 === 0) {
      boardXids.push(xid);
      send(BOARD_MAC, xid++);
    }
    if (i % 200 === 0) await new Promise((r) => setImmediate(r)); // let replies in; the flood stays a flood
  }
  // A real client retransmits (U-Boot every few seconds): a slow answer is fine, none is not. Checked every
  // 0.5 s; the unanswered ones are sent again every second.
  const unanswered = () => boardXids.filter((x) => replies.get(x) !== MsgType.OFFER);
  let checks = 0;
  await until('an OFFER to every board DISCOVER', () => {
    const missing = unanswered();
    const check = checks++;
    if (check > 0 && check % 2 === 0) for (const x of missing) send(BOARD_MAC, x);
    return missing.length === 0;
  }, { timeoutMs: 10_000, intervalMs: 500, detail: () => `unanswered xids: ${unanswered().join(', ')}` });
  expect(boardXids.filter((x) => replies.get(x) !== MsgType.OFFER)).toEqual([]);
  // every unknown MAC reached the state file in a few batched writes
  await inventory.noteUnknown('02:00:00:00:77:99');
  const seconds = (Date.now() - t0) / 1000;
  const made = writes - writesBefore;
  expect(made).toBeGreaterThan(0);
  expect(made).toBeLessThanOrEqual(Math.ceil(seconds) + 2);
  expect(store.state.discovered.length).toBeLessThanOrEqual(1000);
  expect(store.state.discovered.length).toBeGreaterThan(100);
  console.log(`dhcp flood: 5000 unknown MACs + ${boardXids.length} board DISCOVERs in ${seconds.toFixed(1)} s; ${made} state writes; ${store.state.discovered.length} MACs recorded`);
}, 120_000);

import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CLOSE, SUBPROTOCOL } from '../../src/console/protocol.js';
import { RingBuffer } from '../../src/console/ring.js';
import { requireTools } from '../helpers/tools.js';
import { until } from '../helpers/until.js';
import { openViewer, startConsoleServer, type ConsoleServer, type TestViewer } from './harness.js';
import { PtyPair } from './pty-pair.js';

// Real ptys (socat), real serialport, real WebSockets and HTTP on loopback, and the API's own authorization:
// tenants, tokens and a lease made through the API. Alice leases board b1; bob is another tenant.
let dir: string;
let pair: PtyPair;
let board: Awaited<ReturnType<PtyPair['openBoard']>>;
let srv: ConsoleServer;
let alice: string;
let bob: string;
let admin: string;
let L1: string;
const viewers: TestViewer[] = [];
const view = async (token: string | undefined, path = `/v1/leases/${L1}/console`, auth: 'header' | 'subprotocol' = 'header') => {
  const v = await openViewer(srv.url, path, token, auth);
  viewers.push(v);
  await v.waitMessage((m) => m.type === 'state', 2000, 'initial state');
  return v;
};

beforeAll(async () => {
  requireTools('socat');
  dir = mkdtempSync(join(tmpdir(), 'console-test-'));
  pair = new PtyPair(join(dir, 'b1.tty'), join(dir, 'board-end.tty'));
  await pair.start();
  board = await pair.openBoard();
  srv = await startConsoleServer({ dataDir: dir, maxBufferedBytes: 256 * 1024, log: { rotateBytes: 4096, keep: 2 } });
  [alice, bob] = [await srv.tenant('alice'), await srv.tenant('bob')];
  admin = srv.admin;
  L1 = await srv.boardLease('b1', alice); // before the line is up: a lease's start clears the scrollback
  const s = await srv.sessions.ensure({ id: 'b1', serial: pair.line });
  await until('console line connected', () => s!.state().state === 'connected', { timeoutMs: 5000 });
});

afterEach(() => {
  for (const v of viewers.splice(0)) v.ws.terminate();
});

afterAll(async () => {
  await board?.close();
  await srv?.stop();
  await pair?.stop();
});

describe('scrollback ring', () => {
  it('keeps the last N bytes in order across wrap-around', () => {
    const r = new RingBuffer(10);
    r.write(Buffer.from('abcdef'));
    r.write(Buffer.from('ghijkl'));
    expect(r.snapshot().toString()).toBe('cdefghijkl');
    r.write(Buffer.from('0123456789ABC'));
    expect(r.snapshot().toString()).toBe('3456789ABC');
    expect(r.total).toBe(25);
  });
});

describe('console over WebSocket (pty line)', () => {
  it('a late joiner first receives the scrollback, then live output', async () => {
    const early = 'boot message before anyone watched\r\n';
    await board.port.asyncWrite(Buffer.from(early));
    await until('the whole boot message read by the session', () => srv.sessions.get('b1')!.state().bytesIn >= early.length, { timeoutMs: 5000 });
    const v = await view(alice);
    const hello = v.messages.find((m) => m.type === 'info' && m.event === 'hello');
    expect(hello).toMatchObject({ board: 'b1', who: 'tenant alice', canType: true });
    await board.port.asyncWrite(Buffer.from('live line\r\n'));
    await v.out.waitFor('live line', 5000, 'live output');
    // everything the line said, once each, scrollback first: nothing lost or doubled at the join
    expect(v.bytes().toString()).toBe(early + 'live line\r\n');
  });

  it('binary garbage is passed through intact, both ways (bytes in = bytes out)', async () => {
    const v = await view(alice);
    await board.port.asyncWrite(Buffer.from('<before the garbage>'));
    await v.out.waitFor('<before the garbage>', 5000, 'scrollback and marker at the viewer');
    const before = v.bytes().length;
    const garbage = Buffer.concat([Buffer.from(Array.from({ length: 256 }, (_, i) => i)), randomBytes(64 * 1024)]);
    await board.port.asyncWrite(garbage);
    await until('all garbage bytes at the viewer', () => v.bytes().length - before >= garbage.length, { timeoutMs: 5000 });
    expect(v.bytes().subarray(before).equals(garbage)).toBe(true);

    const got: Buffer[] = [];
    const onData = (c: Buffer) => got.push(c);
    board.port.on('data', onData);
    const up = Buffer.concat([Buffer.from(Array.from({ length: 256 }, (_, i) => 255 - i)), randomBytes(16 * 1024)]);
    for (let i = 0; i < up.length; i += 4096) v.ws.send(up.subarray(i, i + 4096));
    await until('all bytes typed reached the board', () => Buffer.concat(got).length >= up.length, { timeoutMs: 5000 });
    board.port.off('data', onData);
    expect(Buffer.concat(got).equals(up)).toBe(true);
  });

  it('two typists (the tenant and the admin helping her): both reach the line, and each is told who else is typing', async () => {
    const a = await view(alice);
    const b = await view(admin, `/v1/leases/${L1}/console`, 'subprotocol');
    expect(b.ws.protocol).toBe(SUBPROTOCOL); // the bearer.<token> subprotocol is never echoed
    const got: Buffer[] = [];
    const onData = (c: Buffer) => got.push(c);
    board.port.on('data', onData);
    await b.type('from-admin ');
    await a.waitMessage((m) => m.type === 'info' && m.event === 'typing' && m.who === 'admin', 5000, 'alice told the admin types');
    await a.type('from-alice');
    await b.waitMessage((m) => m.type === 'info' && m.event === 'typing' && m.who === 'tenant alice', 5000, 'the admin told alice types');
    await until('both inputs at the board', () => Buffer.concat(got).toString().includes('from-alice'), { timeoutMs: 5000 });
    expect(Buffer.concat(got).toString()).toBe('from-admin from-alice');
    board.port.off('data', onData);
    // The admin's hello listed alice; alice was told the admin joined (who, may type, now two viewers).
    expect(b.messages.find((m) => m.type === 'info' && m.event === 'hello')).toMatchObject({ viewers: [{ who: 'tenant alice', canType: true }] });
    const join = a.messages.find((m) => m.type === 'info' && m.event === 'join' && m.who === 'admin');
    expect(join).toMatchObject({ who: 'admin', canType: true, count: 2 });
    expect(join).not.toHaveProperty('viewers');
  });

  it('a join costs one small message per viewer, however many watch (no viewer list on every join)', async () => {
    const first = await view(alice);
    for (let i = 0; i < 14; i++) await view(admin, `/v1/leases/${L1}/console?watch=1`);
    await first.waitMessage((m) => m.type === 'info' && m.event === 'join' && m.count === 15, 5000, 'the 15th viewer announced');
    const joins = first.messages.filter((m) => m.type === 'info' && m.event === 'join' && m.who === 'admin').map((m) => JSON.stringify(m).length);
    expect(joins).toHaveLength(14);
    // The same size for the 2nd and the 15th viewer: O(1) per join for each viewer, O(n) in all.
    expect(Math.max(...joins)).toBeLessThan(120);
    expect(Math.max(...joins) - Math.min(...joins)).toBeLessThanOrEqual(1); // "count" gains a digit at 10
  });

  it('a viewer who joined watch-only (?watch=1) cannot write or send BREAK', async () => {
    const w = await view(admin, `/v1/leases/${L1}/console?watch=1`);
    expect(w.messages.find((m) => m.type === 'info' && m.event === 'hello')).toMatchObject({ who: 'admin', canType: false });
    const a = await view(alice);
    const got: Buffer[] = [];
    const onData = (c: Buffer) => got.push(c);
    board.port.on('data', onData);
    const outBefore = srv.sessions.state('b1')!.bytesOut;
    await w.type('rm -rf /\r');
    w.ws.send(JSON.stringify({ type: 'break' }));
    w.ws.send('{"type":"no-such-message"}'); // answered at once: the server has handled the two before it
    await w.waitMessage((m) => m.type === 'info' && m.event === 'error' && /unknown control message/.test(m.message), 5000, 'answer to the marker message');
    expect(w.messages.filter((m) => m.type === 'info' && m.event === 'denied')).toHaveLength(1); // told once
    // Markers from a typist, sent after: her bytes and her BREAK arrive, and nothing of the watcher's came before them.
    await a.type('typist-marker');
    await until('the typist’s marker at the board', () => Buffer.concat(got).toString().includes('typist-marker'), { timeoutMs: 5000 });
    board.port.off('data', onData);
    expect(Buffer.concat(got).toString()).toBe('typist-marker');
    expect(srv.sessions.state('b1')!.bytesOut - outBefore).toBe('typist-marker'.length);
    // The typist's BREAK, sent after the watcher's and the same way, comes back to her (announced, or refused by
    // the pty): by then the watcher's would have too — an announcement, or the watcher's own 'BREAK not sent'.
    a.ws.send(JSON.stringify({ type: 'break' }));
    await a.waitMessage((m) => m.type === 'info' && ((m.event === 'break' && m.who === 'tenant alice') || (m.event === 'error' && /BREAK not sent/.test(m.message))), 5000, 'the typist’s BREAK answered');
    const breaks = (v: TestViewer) => v.messages.filter((m) => m.type === 'info' && (m.event === 'break' || /BREAK/.test(m.message)));
    expect(breaks(w).filter((m) => m.type === 'info' && m.who !== 'tenant alice')).toEqual([]);
    expect(breaks(a).filter((m) => m.type === 'info' && m.who === 'admin')).toEqual([]);
    await board.port.asyncWrite(Buffer.from('watchers still see output\r\n'));
    await w.out.waitFor('watchers still see output', 2000, 'output for the watcher');
  });

  it('refuses before upgrading: 401 without a token or with a bad one, 404 for another tenant or a tenant on the board endpoint', async () => {
    await expect(openViewer(srv.url, `/v1/leases/${L1}/console`, undefined)).rejects.toMatchObject({ status: 401 });
    await expect(openViewer(srv.url, `/v1/leases/${L1}/console`, 'nope')).rejects.toMatchObject({ status: 401 });
    await expect(openViewer(srv.url, `/v1/leases/${L1}/console`, 'nope', 'subprotocol')).rejects.toMatchObject({ status: 401 });
    await expect(openViewer(srv.url, `/v1/leases/${L1}/console`, bob)).rejects.toMatchObject({ status: 404 }); // not his: not found
    await expect(openViewer(srv.url, `/v1/leases/${L1}/console?watch=1`, bob)).rejects.toMatchObject({ status: 404 }); // nor to watch
    await expect(openViewer(srv.url, '/v1/boards/b1/console', alice)).rejects.toMatchObject({ status: 404 }); // tenants: not the board endpoint
    await expect(openViewer(srv.url, '/v1/nothing', alice)).rejects.toMatchObject({ status: 404 });
    const a = await view(admin, '/v1/boards/b1/console');
    expect(a.messages[0]).toMatchObject({ type: 'info', event: 'hello', who: 'admin', canType: true });
  });
});

describe('device loss', () => {
  it('the pty vanishes and comes back at the same path: the session reconnects, viewers stay and are told', async () => {
    const v = await view(alice);
    await board.close();
    await pair.stop();
    const down = await v.waitMessage((m) => m.type === 'state' && m.state === 'disconnected', 5000, 'disconnected state');
    expect(down).toMatchObject({ type: 'state', state: 'disconnected' });
    expect(srv.sessions.states().b1).toMatchObject({ state: 'disconnected', viewers: 1 });
    await expect(srv.sessions.get('b1')!.source.write(Buffer.from('x'))).rejects.toThrow(/disconnected/);
    await until('three failed attempts while the device is absent', () => srv.sessions.state('b1')!.attempts >= 3, { timeoutMs: 15_000 });
    expect(srv.sessions.state('b1')).toMatchObject({ state: 'disconnected', lastError: expect.any(String) });
    await pair.start();
    board = await pair.openBoard();
    const after = v.messages.indexOf(down);
    await v.waitMessage((m) => m.type === 'state' && m.state === 'connected' && v.messages.indexOf(m) > after, 5000, 'connected again');
    await board.port.asyncWrite(Buffer.from('back after replug\r\n'));
    await v.out.waitFor('back after replug', 3000, 'output after reconnect');
    await v.type('typed after replug');
    await board.out.waitFor('typed after replug', 3000, 'input after reconnect');
    expect(v.ws.readyState).toBe(v.ws.OPEN);
  });
});

describe('slow viewers', () => {
  it('a viewer that stops reading is dropped with a notice; memory stays bounded and the others get every byte', async () => {
    const fast = await view(alice);
    const slow = await view(admin);
    await board.port.asyncWrite(Buffer.from('<before the flood>'));
    await fast.out.waitFor('<before the flood>', 5000, 'marker at the fast viewer');
    fast.discard();
    slow.ws.pause(); // stops reading its socket: the server's send queue for it fills up
    const base = fast.count();
    const hash = createHash('sha256');
    const total = 32 << 20;
    let peak = 0;
    const sampler = setInterval(() => (peak = Math.max(peak, srv.bridge.stats().bufferedBytes)), 5);
    const chunk = randomBytes(64 * 1024);
    const flood = (async () => {
      for (let sent = 0; sent < total; sent += chunk.length) {
        hash.update(chunk);
        await board.port.asyncWrite(chunk);
      }
    })();
    try {
      // As soon as the server drops bob (the others are told), bob reads again: what the server queued for him
      // before the drop, then the notice, then the close — well within the server's grace before it cuts him off.
      await fast.waitMessage((m) => m.type === 'info' && m.event === 'leave' && m.who === 'admin', 60_000, 'the slow admin dropped');
      slow.ws.resume();
      const { code } = await slow.closed;
      expect(code).toBe(CLOSE.tooSlow);
      const infos = slow.messages.filter((m) => m.type === 'info');
      expect(infos.at(-1)).toMatchObject({ type: 'info', event: 'slow', message: expect.stringMatching(/unread/) });
    } finally {
      await flood;
    }
    await until('every byte at the fast viewer', () => fast.count() - base >= total, { timeoutMs: 60_000 });
    clearInterval(sampler);
    expect(fast.count() - base).toBe(total);
    expect(fast.hash()).toBe(hash.digest('hex'));
    expect(srv.sessions.get('b1')!.viewerList().map((x) => x.who)).toEqual(['tenant alice']);
    expect(srv.bridge.stats().dropped).toBeGreaterThanOrEqual(1);
    // What the server ever held for its viewers: the bound (256 KiB) plus at most a read chunk per viewer,
    // not the 32 MiB the stalled viewer did not read. (Time and throughput: bench/api-bounds.ts.)
    expect(peak).toBeLessThan(256 * 1024 + 2 * 65536 + 65536);
  }, 120_000);
});

describe('lease logs (last: it releases the lease)', () => {
  it('records output during the lease, rotated by size, served to the owner and the admin only, purged on release', async () => {
    // A new lease of b1, now that its line is up: the lease's start opens its log (and clears the scrollback).
    await srv.release(L1, alice);
    const L2 = await srv.lease('b1', alice);
    const get = (token?: string, id = L2) => fetch(`${srv.url}/v1/leases/${id}/console/log`, { headers: token ? { authorization: `Bearer ${token}` } : {} });
    // Nothing printed yet: an empty log, and nothing on disk (the file comes with the first byte).
    let res = await get(alice);
    expect(res.status).toBe(200);
    expect((await res.arrayBuffer()).byteLength).toBe(0);
    expect(existsSync(join(dir, 'console-logs', L2))).toBe(false);
    const first = Buffer.from('A'.repeat(5000) + 'B'.repeat(5000));
    const inBefore = srv.sessions.state('b1')!.bytesIn;
    await board.port.asyncWrite(first);
    await until('the first batch read by the session', () => srv.sessions.state('b1')!.bytesIn >= inBefore + first.length, { timeoutMs: 5000 });
    const v = await view(alice, `/v1/leases/${L2}/console`);
    await v.out.waitFor('B'.repeat(5000), 3000, 'first batch');
    res = await get(alice);
    expect(res.status).toBe(200);
    expect(Buffer.from(await res.arrayBuffer()).equals(first)).toBe(true);

    const second = randomBytes(10_000);
    const base = v.count();
    await board.port.asyncWrite(second);
    await until('second batch', () => v.count() >= base + second.length, { timeoutMs: 3000 });
    res = await get(admin); // the admin reads every lease's log
    const all = Buffer.concat([first, second]);
    const kept = Buffer.from(await res.arrayBuffer());
    // 20 000 bytes in 4096-byte files, 2 rotated kept: the last 2 × 4096 + (20 000 mod 4096) bytes survive.
    expect(kept.length).toBe(2 * 4096 + (20_000 % 4096));
    expect(kept.equals(all.subarray(all.length - kept.length))).toBe(true);
    expect(readdirSync(join(dir, 'console-logs', L2)).sort()).toEqual(['console.log', 'console.log.1', 'console.log.2']);

    expect((await get(bob)).status).toBe(404); // another tenant's
    expect((await get('nope')).status).toBe(401);
    expect((await get()).status).toBe(401);
    expect((await get(alice, L1)).status).toBe(404); // the released lease's log went with it

    // Released: the log is purged and the socket closed (its grant ended).
    await srv.release(L2, alice);
    expect((await v.closed).code).toBe(CLOSE.revoked);
    expect((await get(alice)).status).toBe(404);
    expect(readdirSync(join(dir, 'console-logs'))).not.toContain(L2);
  });
});

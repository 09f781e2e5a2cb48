import { createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { PassThrough } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EscapeFilter, runConsole } from '../../src/cli/console.js';
import { BRK, DO, DONT, IAC, OPT_BINARY, OPT_ECHO, OPT_SGA, WILL, WONT } from '../../src/console/telnet.js';
import { openViewer, startConsoleServer, until } from './harness.js';

// Network serial servers on loopback. The far end here is a small telnet server that negotiates the way
// ser2net's telnet mode does (WILL ECHO, WILL SGA, DO TTYPE, WILL COM-PORT) and agrees to BINARY.
const TTYPE = 24;
const COM_PORT = 44;

class SerialServer {
  server!: Server;
  conns: Socket[] = [];
  received = Buffer.alloc(0);
  constructor(private readonly telnet: boolean) {}
  async start(port = 0): Promise<number> {
    this.server = createServer((sock) => {
      this.conns.push(sock);
      if (this.telnet) sock.write(Buffer.from([IAC, WILL, OPT_ECHO, IAC, WILL, OPT_SGA, IAC, DO, TTYPE, IAC, WILL, COM_PORT]));
      sock.on('data', (c) => {
        this.received = Buffer.concat([this.received, c]);
        if (!this.telnet) return;
        // Agree to BINARY both ways, as ser2net does, by scanning for the client's requests.
        for (let i = 0; i + 2 < c.length; i++) {
          if (c[i] === IAC && c[i + 1] === DO && c[i + 2] === OPT_BINARY) sock.write(Buffer.from([IAC, WILL, OPT_BINARY]));
          if (c[i] === IAC && c[i + 1] === WILL && c[i + 2] === OPT_BINARY) sock.write(Buffer.from([IAC, DO, OPT_BINARY]));
        }
      });
      sock.on('error', () => {});
    });
    await new Promise<void>((r) => this.server.listen(port, '127.0.0.1', r));
    return (this.server.address() as AddressInfo).port;
  }
  send(b: Buffer | string) {
    for (const c of this.conns) if (!c.destroyed) c.write(b);
  }
  async stop() {
    for (const c of this.conns) c.destroy();
    this.conns = [];
    await new Promise((r) => this.server.close(r));
  }
}

const has = (hay: Buffer, needle: number[]) => hay.includes(Buffer.from(needle));
const GRANTS = {
  tok: { leases: { LT: { boardId: 'tel', canType: true, who: 'alice' }, LR: { boardId: 'raw', canType: true, who: 'alice' } } },
};
let srv: Awaited<ReturnType<typeof startConsoleServer>>;
const telnet = new SerialServer(true);
const raw = new SerialServer(false);
let rawPort = 0;

beforeAll(async () => {
  srv = await startConsoleServer(GRANTS);
  const tport = await telnet.start();
  rawPort = await raw.start();
  await srv.sessions.ensure({ id: 'tel', serial: `telnet://127.0.0.1:${tport}` });
  await srv.sessions.ensure({ id: 'raw', serial: `tcp://127.0.0.1:${rawPort}` });
  await until(() => srv.sessions.state('tel')?.state === 'connected' && srv.sessions.state('raw')?.state === 'connected', 5000, 'both lines up');
});

afterAll(async () => {
  await srv?.stop();
  await telnet.stop();
  await raw.stop().catch(() => {});
});

describe('telnet serial server (ser2net telnet mode)', () => {
  it('answers negotiation, unescapes IAC IAC, keeps every byte value, and sends BREAK as IAC BRK', async () => {
    await until(() => has(telnet.received, [IAC, DONT, COM_PORT]), 2000, 'negotiation answers');
    expect(has(telnet.received, [IAC, DO, OPT_ECHO])).toBe(true); // the server echoes, as a board's shell does
    expect(has(telnet.received, [IAC, WONT, TTYPE])).toBe(true);
    expect(has(telnet.received, [IAC, DONT, COM_PORT])).toBe(true); // no RFC 2217: the line speed is the server's business
    const v = await openViewer(srv.url, '/v1/leases/LT/console', 'tok');
    await v.waitMessage((m) => m.type === 'state', 2000, 'state');
    telnet.send(Buffer.from([0x41, IAC, IAC, 0x00, 0x0d, 0x00, IAC, 241 /* NOP */, 0x42]));
    await until(() => v.count() >= 5, 2000, 'bytes at the viewer');
    expect([...v.bytes()]).toEqual([0x41, 0xff, 0x00, 0x0d, 0x00, 0x42]); // binary mode: CR NUL stays as sent

    const mark = telnet.received.length;
    v.ws.send(Buffer.from([0xff, 0x0d, 0x41]));
    v.ws.send(JSON.stringify({ type: 'break' }));
    await until(() => has(telnet.received.subarray(mark), [IAC, BRK]), 2000, 'IAC BRK');
    expect([...telnet.received.subarray(mark)]).toEqual([IAC, IAC, 0x0d, 0x41, IAC, BRK]);
    await v.waitMessage((m) => m.type === 'info' && m.event === 'break', 2000, 'break announced');
    v.ws.close();
  });
});

describe('raw TCP serial server', () => {
  it('passes bytes through untouched, refuses BREAK with a reason, and reconnects when the server comes back', async () => {
    const v = await openViewer(srv.url, '/v1/leases/LR/console', 'tok');
    await v.waitMessage((m) => m.type === 'state', 2000, 'state');
    const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    raw.send(all);
    await until(() => v.count() >= 256, 2000, 'bytes');
    expect(v.bytes().equals(all)).toBe(true);
    v.ws.send(JSON.stringify({ type: 'break' }));
    const err = await v.waitMessage((m) => m.type === 'info' && m.event === 'error', 2000, 'break refused');
    expect(err.type === 'info' && err.message).toMatch(/telnet/);

    await raw.stop();
    await v.waitMessage((m) => m.type === 'state' && m.state === 'disconnected', 3000, 'disconnected');
    await new Promise((r) => setTimeout(r, 500));
    await raw.start(rawPort);
    const n = v.messages.length;
    await v.waitMessage((m) => m.type === 'state' && m.state === 'connected' && v.messages.indexOf(m) >= n, 5000, 'reconnected');
    await until(() => raw.conns.length > 0, 2000, 'server sees the reconnect');
    raw.send('after restart');
    await v.out.waitFor('after restart', 2000, 'data after reconnect');
    v.ws.close();
  });
});

describe('dozen console (CLI)', () => {
  it('ssh-style escapes: ~ only after a newline; ~~ sends one ~', () => {
    const f = new EscapeFilter();
    const ev = f.feed(Buffer.from('a~b\r~~x\n~B~?\r~.ignored'));
    expect(ev).toEqual([{ send: Buffer.from('a~b\r~x\n') }, { action: 'break' }, { action: 'help' }, { send: Buffer.from('\r') }, { action: 'quit' }]);
  });

  it('attaches stdin/stdout to a lease console; ~B sends BREAK to the line, ~. quits with status 0', async () => {
    const stdin = new PassThrough();
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    let out = '';
    let err = '';
    stdout.on('data', (c) => (out += c));
    stderr.on('data', (c) => (err += c));
    const mark = telnet.received.length;
    const done = runConsole({ url: srv.url, token: 'tok', kind: 'lease', id: 'LT', stdin, stdout, stderr });
    await until(() => err.includes('~. quit'), 3000, 'the CLI banner');
    telnet.send('board says hi\r\n');
    await until(() => out.includes('board says hi'), 2000, 'board output on stdout');
    stdin.write('uname -a\r');
    stdin.write('~B');
    await until(() => has(telnet.received.subarray(mark), [IAC, BRK]), 2000, 'BREAK at the serial server');
    stdin.write('~.');
    expect(await done).toBe(0);
    expect(telnet.received.subarray(mark).toString('latin1')).toContain('uname -a\r');
  });

  it('reports a refused token and exits non-zero', async () => {
    const stderr = new PassThrough();
    let err = '';
    stderr.on('data', (c) => (err += c));
    const code = await runConsole({ url: srv.url, token: 'wrong', kind: 'lease', id: 'LT', stdin: new PassThrough(), stdout: new PassThrough(), stderr });
    expect(code).toBe(1);
    expect(err).toMatch(/404 lease LT not found/);
  });
});

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EscapeFilter, runConsole } from '../../src/cli/console.js';
import { requireTools } from '../helpers/tools.js';
import { until } from '../helpers/until.js';
import { openViewer, startConsoleServer } from './harness.js';
import { PtyPair } from './pty-pair.js';

// Network serial servers on loopback: the real ser2net (Debian's package), in telnet mode and in raw TCP mode,
// each in front of a pty pair (socat) whose other end the test drives as the board.
class Ser2net {
  proc?: ChildProcess;
  constructor(
    private readonly dir: string,
    readonly ports: { telnet: number; raw: number },
    readonly lines: { telnet: string; raw: string },
  ) {}
  async start(): Promise<void> {
    const conf = join(this.dir, 'ser2net.yaml');
    const conn = (name: string, accepter: string, line: string) =>
      `connection: &${name}\n  accepter: ${accepter}\n  enable: on\n  options:\n    kickolduser: true\n  connector: serialdev,${line},115200n81,local\n`;
    writeFileSync(conf, `%YAML 1.1\n---\n${conn('tel', `telnet,tcp,127.0.0.1,${this.ports.telnet}`, this.lines.telnet)}\n${conn('raw', `tcp,127.0.0.1,${this.ports.raw}`, this.lines.raw)}`);
    let err = '';
    const proc = spawn('ser2net', ['-n', '-u', '-c', conf, '-P', join(this.dir, 'ser2net.pid')], { stdio: ['ignore', 'ignore', 'pipe'] });
    proc.stderr!.on('data', (c) => (err += c));
    this.proc = proc;
    // listening on both ports = ready
    await until(`ser2net listening on ${this.ports.telnet} and ${this.ports.raw}`, () => {
      if (proc.exitCode !== null) throw new Error(`ser2net exited with ${proc.exitCode}: ${err}`);
      return listening(this.ports.telnet) && listening(this.ports.raw);
    }, { timeoutMs: 10_000 });
  }
  async stop(): Promise<void> {
    const p = this.proc;
    this.proc = undefined;
    if (p && p.exitCode === null) await new Promise<void>((r) => (p.once('exit', () => r()), p.kill('SIGTERM')));
  }
}

/** Whether something listens on a loopback TCP port (read from /proc, so no connection is made to it). */
function listening(port: number): boolean {
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  return readFileSync('/proc/net/tcp', 'utf8').split('\n').some((l) => {
    const f = l.trim().split(/\s+/);
    return f[1] === `0100007F:${hex}` && f[3] === '0A';
  });
}

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

// Alice leases both boards through the API; her token opens their consoles.
let tok: string;
let LT: string;
let LR: string;
let srv: Awaited<ReturnType<typeof startConsoleServer>>;
let ser2net: Ser2net;
let telPair: PtyPair;
let rawPair: PtyPair;
let telBoard: Awaited<ReturnType<PtyPair['openBoard']>>;
let rawBoard: Awaited<ReturnType<PtyPair['openBoard']>>;

beforeAll(async () => {
  requireTools('ser2net', 'socat');
  const dir = mkdtempSync(join(tmpdir(), 'ser2net-test-'));
  telPair = new PtyPair(join(dir, 'tel-line.tty'), join(dir, 'tel-board.tty'));
  rawPair = new PtyPair(join(dir, 'raw-line.tty'), join(dir, 'raw-board.tty'));
  await telPair.start();
  await rawPair.start();
  telBoard = await telPair.openBoard();
  rawBoard = await rawPair.openBoard();
  ser2net = new Ser2net(dir, { telnet: await freePort(), raw: await freePort() }, { telnet: telPair.line, raw: rawPair.line });
  await ser2net.start();
  srv = await startConsoleServer();
  tok = await srv.tenant('alice');
  LT = await srv.boardLease('tel', tok);
  LR = await srv.boardLease('raw', tok);
  await srv.sessions.ensure({ id: 'tel', serial: `telnet://127.0.0.1:${ser2net.ports.telnet}` });
  await srv.sessions.ensure({ id: 'raw', serial: `tcp://127.0.0.1:${ser2net.ports.raw}` });
  await until('both lines up', () => srv.sessions.state('tel')?.state === 'connected' && srv.sessions.state('raw')?.state === 'connected', { timeoutMs: 10_000 });
});

afterAll(async () => {
  await srv?.stop();
  await ser2net?.stop();
  await telBoard?.close();
  await rawBoard?.close();
  await telPair?.stop();
  await rawPair?.stop();
});

describe('telnet serial server (ser2net telnet mode)', () => {
  it('negotiates binary both ways: every byte value crosses intact (IAC doubled on the wire, CR NUL kept); BREAK is a telnet command, not data', async () => {
    const v = await openViewer(srv.url, `/v1/leases/${LT}/console`, tok);
    await v.waitMessage((m) => m.type === 'state', 5000, 'state');
    const down = Buffer.from([0x41, 0xff, 0x00, 0x0d, 0x00, 0x0d, 0x0a, 0xff, 0xff, 0x42]);
    await telBoard.port.asyncWrite(down);
    await until('bytes at the viewer', () => v.count() >= down.length, { timeoutMs: 5000 });
    expect([...v.bytes()]).toEqual([...down]); // ser2net escapes IAC; we unescape; binary mode: CR NUL stays as sent

    const mark = telBoard.received().length;
    const up = Buffer.concat([Buffer.from([0xff, 0x0d, 0x00, 0x0d, 0x0a, 0x41]), Buffer.from(Array.from({ length: 256 }, (_, i) => i))]);
    v.ws.send(up);
    v.ws.send(JSON.stringify({ type: 'break' }));
    await v.waitMessage((m) => m.type === 'info' && m.event === 'break', 5000, 'break announced');
    v.ws.send(Buffer.from('<after-break>'));
    await telBoard.out.waitFor('<after-break>', 5000, 'marker after the BREAK at the board');
    // exactly what was typed, then the marker: the BREAK (IAC BRK) was taken by ser2net as a command, not passed on
    expect(telBoard.received().subarray(mark).equals(Buffer.concat([up, Buffer.from('<after-break>')]))).toBe(true);
    v.ws.close();
  });
});

describe('raw TCP serial server (ser2net raw mode)', () => {
  it('passes bytes through untouched, refuses BREAK with a reason, and reconnects when the server comes back', async () => {
    const v = await openViewer(srv.url, `/v1/leases/${LR}/console`, tok);
    await v.waitMessage((m) => m.type === 'state', 5000, 'state');
    const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    await rawBoard.port.asyncWrite(all);
    await until('bytes', () => v.count() >= 256, { timeoutMs: 5000 });
    expect(v.bytes().equals(all)).toBe(true);
    v.ws.send(JSON.stringify({ type: 'break' }));
    const err = await v.waitMessage((m) => m.type === 'info' && m.event === 'error', 5000, 'break refused');
    expect(err.type === 'info' && err.message).toMatch(/telnet/);

    await ser2net.stop();
    await v.waitMessage((m) => m.type === 'state' && m.state === 'disconnected', 5000, 'disconnected');
    await until('a failed attempt while ser2net is down', () => srv.sessions.state('raw')!.attempts >= 1, { timeoutMs: 10_000 });
    await ser2net.start();
    const n = v.messages.length;
    await v.waitMessage((m) => m.type === 'state' && m.state === 'connected' && v.messages.indexOf(m) >= n, 10_000, 'reconnected');
    await until('the telnet line back too', () => srv.sessions.state('tel')?.state === 'connected', { timeoutMs: 10_000 });
    await rawBoard.port.asyncWrite(Buffer.from('after restart'));
    await v.out.waitFor('after restart', 5000, 'data after reconnect');
    v.ws.send(Buffer.from('typed after restart'));
    await rawBoard.out.waitFor('typed after restart', 5000, 'input after reconnect');
    v.ws.close();
  });
});

/** The CLI's three streams, with what it wrote so far. */
function terminal() {
  const stdin = new PassThrough();
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (c) => (out += c));
  stderr.on('data', (c) => (err += c));
  return { stdin, stdout, stderr, out: () => out, err: () => err };
}

describe('dozen console (CLI)', () => {
  it('ssh-style escapes: ~ only after a newline; ~~ sends one ~', () => {
    const f = new EscapeFilter();
    const ev = f.feed(Buffer.from('a~b\r~~x\n~B~?\r~.ignored'));
    expect(ev).toEqual([{ send: Buffer.from('a~b\r~x\n') }, { action: 'break' }, { action: 'help' }, { send: Buffer.from('\r') }, { action: 'quit' }]);
  });

  it('attaches stdin/stdout to a lease console; ~B sends BREAK to the line, ~. quits with status 0', async () => {
    const { stdin, stdout, stderr, out, err } = terminal();
    const mark = telBoard.received().length;
    const done = runConsole({ url: srv.url, token: tok, kind: 'lease', id: LT, stdin, stdout, stderr });
    await until('the CLI banner', () => err().includes('~. quit'), { timeoutMs: 5000 });
    await telBoard.port.asyncWrite(Buffer.from('board says hi\r\n'));
    await until('board output on stdout', () => out().includes('board says hi'), { timeoutMs: 5000 });
    stdin.write('uname -a\r');
    stdin.write('~B');
    await until('BREAK sent to the serial server', () => err().includes('alice sent BREAK'), { timeoutMs: 5000 });
    stdin.write('after\r~.');
    expect(await done).toBe(0);
    await telBoard.out.waitFor('after\r', 5000, 'input after ~B at the board');
    // the escapes never reach the line: what the board got is the typed text, nothing else
    expect(telBoard.received().subarray(mark).toString('latin1')).toBe('uname -a\rafter\r');
  });

  it("--watch: the board's output shows; what is typed is refused and never reaches the line", async () => {
    const { stdin, stdout, stderr, out, err } = terminal();
    const mark = telBoard.received().length;
    const done = runConsole({ url: srv.url, token: tok, kind: 'lease', id: LT, watch: true, stdin, stdout, stderr });
    await until('the CLI banner', () => err().includes('~. quit'), { timeoutMs: 5000 });
    await telBoard.port.asyncWrite(Buffer.from('for the watcher\r\n'));
    await until('board output on stdout', () => out().includes('for the watcher'), { timeoutMs: 5000 });
    stdin.write('typed-while-watching\r');
    await until('the refusal, told to the watcher', () => err().includes('may watch this console but not type'), { timeoutMs: 5000 });
    // A typist's marker, sent after the refusal: the only bytes the line got.
    const typist = await openViewer(srv.url, `/v1/leases/${LT}/console`, tok);
    await typist.type('typist-marker');
    await telBoard.out.waitFor('typist-marker', 5000, 'the typist’s marker at the board');
    typist.ws.terminate();
    expect(telBoard.received().subarray(mark).toString('latin1')).toBe('typist-marker');
    stdin.write('\r~.');
    expect(await done).toBe(0);
  });

  it('reports a refused token (another tenant\'s lease: 404; a bad token: 401) and exits non-zero', async () => {
    const stderr = new PassThrough();
    let err = '';
    stderr.on('data', (c) => (err += c));
    const bob = await srv.tenant('bob');
    const code = await runConsole({ url: srv.url, token: bob, kind: 'lease', id: LT, stdin: new PassThrough(), stdout: new PassThrough(), stderr });
    expect(code).toBe(1);
    expect(err).toContain(`404 lease ${LT} not found`);
    err = '';
    expect(await runConsole({ url: srv.url, token: 'wrong', kind: 'lease', id: LT, stdin: new PassThrough(), stdout: new PassThrough(), stderr })).toBe(1);
    expect(err).toMatch(/401 /);
  });
});

import { mkdtempSync, rmSync } from 'node:fs';
import { connect as dial, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SerialPort as SerialPortStream } from 'serialport';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { hangupAware } from '../../src/console/hangup-binding.js';
import { ReconnectingSource, type BackoffOptions } from '../../src/console/reconnect.js';
import type { SerialBinding } from '../../src/console/serial-port.js';
import type { ConsoleSource, ConsoleState, Connector, Transport } from '../../src/console/source.js';
import { CONSOLE_SOURCES, connectorFor, consoleSourceKind, openConsoleSource } from '../../src/console/sources.js';
import { ContainerConsole } from '../../src/containers/console.js';
import type { ContainerLeaseDriver } from '../../src/containers/driver.js';
import { ContainerLeasePort } from '../../src/containers/lease-port.js';
import { requireTools } from '../helpers/tools.js';
import { PtyPair } from './pty-pair.js';

// One contract, run against every kind of console line the registry makes (a pty for a serial device, a raw
// TCP and a telnet serial server on loopback), and against the container TTY connector, which the lease
// layer attaches without the registry. Every wait is for an event, bounded, and says what it waited for.
const WAIT = 5000;
/** Fast retries, so a test sees several attempts while the line is down. */
const BACKOFF: BackoffOptions = { initialMs: 20, maxMs: 200, factor: 2, jitter: 0 };
const ALL = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
const ALL_REVERSED = Buffer.from(Array.from({ length: 256 }, (_, i) => 255 - i));

const dir = mkdtempSync(join(tmpdir(), 'source-contract-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** What arrived so far, with bounded waits that re-check on each arrival (never a fixed sleep). */
class Seen<T> {
  readonly items: T[] = [];
  private readonly checks = new Set<() => void>();
  constructor(private readonly show: (items: T[]) => string = (i) => JSON.stringify(i)) {}

  add = (item: T): void => {
    this.items.push(item);
    for (const c of [...this.checks]) c();
  };

  /** Resolves with `probe`'s first answer that is not undefined/false, asked now and after each arrival. */
  wait<R>(what: string, probe: (items: T[]) => R | undefined | false, ms = WAIT): Promise<R> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const r = probe(this.items);
        if (r === undefined || r === false) return;
        done();
        resolve(r);
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`${what}: not within ${ms / 1000} s; seen: ${this.show(this.items)}`));
      }, ms);
      const done = () => {
        clearTimeout(timer);
        this.checks.delete(check);
      };
      this.checks.add(check);
      check();
    });
  }
}

class Bytes extends Seen<Buffer> {
  constructor() {
    super((chunks) => {
      const all = Buffer.concat(chunks);
      return `${all.length} bytes, ending ${JSON.stringify(all.subarray(-64).toString('latin1'))}`;
    });
  }
  get length(): number {
    return this.items.reduce((n, c) => n + c.length, 0);
  }
  since(mark: number): Buffer {
    return Buffer.concat(this.items).subarray(mark);
  }
  /** The bytes after `mark`, once there are at least `n` of them. */
  waitBytes(mark: number, n: number, what: string): Promise<Buffer> {
    return this.wait(`${what} (${n} bytes)`, () => this.length - mark >= n && this.since(mark));
  }
}

/** Settles with `p` or fails after `ms` saying what did not happen. */
async function within<T>(p: Promise<T>, what: string, ms = WAIT): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: not within ${ms / 1000} s`)), ms)));
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** How a call ended, bounded: 'resolved' or the error it rejected with (a hang fails the test). */
const outcome = (p: Promise<unknown>, what: string): Promise<unknown> => within(p.then(() => 'resolved', (err: unknown) => err), what);

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as AddressInfo;
  await new Promise((r) => s.close(r));
  return port;
}

/** The far end of the console's connection: the board on a pty, or a serial server's side of a socket. */
interface FarEnd {
  /** Line data the console sent, in order (telnet: commands taken out, IAC IAC undone). */
  data: Bytes;
  /** Sends line data to the console (a telnet server escapes IAC). */
  send(bytes: Buffer): Promise<void>;
  /** Telnet: every byte on the wire, and the commands seen, each with the data offset it came at. */
  wire?: Bytes;
  commands?: Seen<{ command: number; at: number }>;
  /** Network ends: settles when the console's side hangs up. */
  hungUp?: Promise<void>;
}

/** A kind of line: what its sendBreak() promises, and how to make one to run the contract on. */
interface KindEntry {
  breakPromise: string;
  make(): Promise<Kind>;
}

interface Kind {
  /** Connectors to the line (for registry kinds: connectorFor on the line's string). */
  connector(): Connector;
  /** A connector of this kind to a line where nothing is, and how connect() to it fails. */
  absent(): Connector;
  absentError: RegExp;
  /** The reconnecting source the server runs on this line (registry kinds: openConsoleSource). */
  open(): ConsoleSource;
  /** The far end comes (back) at the same address / goes away (server stopped, pty gone with its QEMU). */
  up(): Promise<void>;
  down(): Promise<void>;
  /** The far end of the console's newest connection, once the line is ready for data both ways. */
  farEnd(): Promise<FarEnd>;
  /** sendBreak() keeps this kind's promise (KindEntry.breakPromise). */
  checkBreak(t: Transport, far: FarEnd): Promise<void>;
  cleanup(): Promise<void>;
}

/** Writes a marker and returns what of it reached the far end's line data (waits for as many bytes). */
async function markerAt(t: Transport, far: FarEnd, marker = '<after-break>'): Promise<string> {
  const mark = far.data.length;
  await t.write(Buffer.from(marker));
  return (await far.data.waitBytes(mark, marker.length, 'the marker at the far end')).toString('latin1');
}

/** A refused BREAK: rejects with a reason, and nothing of it reaches the line (the next bytes are the first). */
async function checkRefusedBreak(t: Transport, far: FarEnd, reason: RegExp): Promise<void> {
  const r = await outcome(t.sendBreak(), 'sendBreak()');
  expect(r).toBeInstanceOf(Error);
  expect((r as Error).message).toMatch(reason);
  expect(await markerAt(t, far)).toBe('<after-break>');
}

/** A loopback TCP server; each connection gets a far end, handed out in order by next(). */
class LoopbackServer {
  private server?: Server;
  private readonly sockets = new Set<Socket>();
  private readonly accepted = new Seen<FarEnd>(() => `${this.taken} connections taken`);
  private taken = 0;
  constructor(
    readonly port: number,
    private readonly farEnd: (sock: Socket, ready: (far: FarEnd) => void) => void,
  ) {}

  async start(): Promise<void> {
    const s = createServer((sock) => {
      this.sockets.add(sock);
      sock.on('close', () => this.sockets.delete(sock));
      sock.on('error', () => {}); // a reset from the console's side is 'close' too
      this.farEnd(sock, this.accepted.add);
    });
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.server = s;
  }

  async stop(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (!s) return;
    const closed = new Promise((r) => s.close(r));
    for (const sock of this.sockets) sock.destroy();
    await closed;
    this.taken = this.accepted.items.length; // what was not handed out belongs to the server that went
  }

  async next(): Promise<FarEnd> {
    const i = this.taken;
    const far = await this.accepted.wait(`connection #${i + 1} to 127.0.0.1:${this.port}, ready`, (items) => items[i]);
    this.taken = i + 1;
    return far;
  }
}

function socketEnd(sock: Socket): FarEnd {
  return {
    data: new Bytes(),
    send: (bytes) => new Promise<void>((res, rej) => sock.write(bytes, (err) => (err ? rej(err) : res()))),
    hungUp: new Promise<void>((r) => sock.once('close', () => r())),
  };
}

/** The raw byte pipe of ser2net's raw mode (and of Docker's hijacked attach stream). */
const rawEnd = (sock: Socket, ready: (far: FarEnd) => void): void => {
  const far = socketEnd(sock);
  sock.on('data', (c: Buffer) => far.data.add(c));
  ready(far);
};

// Telnet (RFC 854/856/858) as ser2net's telnet mode speaks it, written here from the RFCs rather than with
// the codec under test: agree to binary and suppress-go-ahead both ways, escape IAC, record commands.
const T = { IAC: 255, DONT: 254, DO: 253, WONT: 252, WILL: 251, SB: 250, BRK: 243, SE: 240, BINARY: 0, SGA: 3 };
const AGREEABLE = new Set([T.BINARY, T.SGA]);
const escapeIac = (b: Buffer): Buffer => Buffer.from([...b].flatMap((x) => (x === T.IAC ? [T.IAC, T.IAC] : [x])));

/** A telnet server's end; ready once binary is agreed both ways (before that, CR would go as CR NUL). */
const telnetEnd = (sock: Socket, ready: (far: FarEnd) => void): void => {
  const far: FarEnd = { ...socketEnd(sock), wire: new Bytes(), commands: new Seen() };
  far.send = (bytes) => new Promise<void>((res, rej) => sock.write(escapeIac(bytes), (err) => (err ? rej(err) : res())));
  const ours = new Set<number>(); // options we (the server) do
  const theirs = new Set<number>(); // options the console does
  let mode: 'data' | 'iac' | 'opt' | 'sb' | 'sb-iac' = 'data';
  let verb = 0;
  let announced = false;
  sock.on('data', (chunk: Buffer) => {
    far.wire!.add(chunk);
    const data: number[] = [];
    const reply: number[] = [];
    const flush = () => data.length && far.data.add(Buffer.from(data.splice(0)));
    for (const b of chunk) {
      if (mode === 'data') {
        if (b === T.IAC) mode = 'iac';
        else data.push(b);
      } else if (mode === 'iac') {
        mode = 'data';
        if (b === T.IAC) data.push(b);
        else if (b >= T.WILL && b <= T.DONT) [verb, mode] = [b, 'opt'];
        else if (b === T.SB) mode = 'sb';
        else {
          flush();
          far.commands!.add({ command: b, at: far.data.length });
        }
      } else if (mode === 'opt') {
        mode = 'data';
        const [set, yes, no] = verb === T.DO || verb === T.DONT ? [ours, T.WILL, T.WONT] : [theirs, T.DO, T.DONT];
        if (verb === T.DONT || verb === T.WONT) set.delete(b);
        else if (!AGREEABLE.has(b)) reply.push(T.IAC, no, b);
        else if (!set.has(b)) {
          set.add(b); // answer only a change, so two agreeing ends never loop
          reply.push(T.IAC, yes, b);
        }
      } else if (mode === 'sb') {
        if (b === T.IAC) mode = 'sb-iac';
      } else mode = b === T.SE ? 'data' : 'sb';
    }
    flush();
    if (reply.length) sock.write(Buffer.from(reply));
    if (!announced && ours.has(T.BINARY) && theirs.has(T.BINARY)) {
      announced = true;
      ready(far);
    }
  });
};

/** A network serial server kind (raw or telnet) made by the registry from its URL. */
async function networkKind(scheme: 'tcp' | 'telnet'): Promise<Kind> {
  const server = new LoopbackServer(await freePort(), scheme === 'telnet' ? telnetEnd : rawEnd);
  const nowhere = await freePort();
  const line = `${scheme}://127.0.0.1:${server.port}`;
  await server.start();
  return {
    connector: () => connectorFor(line),
    absent: () => connectorFor(`${scheme}://127.0.0.1:${nowhere}`),
    absentError: /ECONNREFUSED/,
    open: () => openConsoleSource(line, { backoff: BACKOFF }),
    up: () => server.start(),
    down: () => server.stop(),
    farEnd: () => server.next(),
    async checkBreak(t, far) {
      if (scheme === 'tcp') return checkRefusedBreak(t, far, /raw TCP .*cannot send BREAK.*telnet:\/\//);
      const from = far.commands!.items.length;
      const at = far.data.length;
      expect(await outcome(t.sendBreak(), 'sendBreak()')).toBe('resolved');
      expect(await markerAt(t, far)).toBe('<after-break>'); // BREAK is not line data
      expect(far.commands!.items.slice(from)).toEqual([{ command: T.BRK, at }]); // one BRK, before the marker
    },
    cleanup: () => server.stop(),
  };
}

interface SetCall {
  brk: boolean;
  at: number;
  error?: string;
}

/** The native binding (made hangup-aware, as the default one is), recording each set() of control flags. */
function recordingBinding(calls: SetCall[]): SerialBinding {
  const base = hangupAware(SerialPortStream.binding);
  return {
    list: () => base.list(),
    async open(options: never) {
      const port = (await base.open(options)) as { set(flags: { brk?: boolean }): Promise<void> };
      const set = port.set.bind(port);
      port.set = async (flags) => {
        const call: SetCall = { brk: Boolean(flags.brk), at: performance.now() };
        calls.push(call);
        try {
          await set(flags);
        } catch (err) {
          call.error = (err as Error).message;
          throw err;
        }
      };
      return port;
    },
  };
}

const KINDS: Record<string, KindEntry> = {
  device: {
    breakPromise: 'a real BREAK: the tty driver is asked to hold the line in BREAK, then to release it (its refusal is the rejection)',
    make: deviceKind,
  },
  tcp: { breakPromise: 'rejects with a reason (a raw pipe cannot carry BREAK) that points to telnet', make: () => networkKind('tcp') },
  telnet: { breakPromise: 'the telnet BREAK command (IAC BRK), taken by the server as a command, not as data', make: () => networkKind('telnet') },
};

/** A serial device: a real pty pair (socat), the board end driven by the test. */
async function deviceKind(): Promise<Kind> {
  requireTools('socat');
  const pair = new PtyPair(join(dir, 'line.tty'), join(dir, 'board.tty'));
  let board: Awaited<ReturnType<PtyPair['openBoard']>> | undefined;
  let far: FarEnd | undefined;
  const sets: SetCall[] = [];
  const up = async () => {
    await pair.start();
    const b = await pair.openBoard();
    const data = new Bytes();
    b.port.on('data', (c: Buffer) => data.add(c));
    [board, far] = [b, { data, send: (bytes) => b.port.asyncWrite(bytes) }];
  };
  await up();
  return {
    // The transports get the native binding with set() recorded (to see the BREAK asked of the tty
    // driver); the reconnecting source gets the registry's default binding.
    connector: () => connectorFor(pair.line, { binding: recordingBinding(sets) }),
    absent: () => connectorFor(join(dir, 'no-such.tty')),
    absentError: /No such file or directory/,
    open: () => openConsoleSource(pair.line, { backoff: BACKOFF }),
    up,
    // The pty goes first (QEMU dies with it); the board end then closes itself on the hangup. (Closing the
    // board end first can kill the process: a port closed while its read is in flight polls a destroyed
    // poller, see hangup-binding.ts' readOrHangup.)
    async down() {
      await pair.stop();
      await board?.close();
    },
    farEnd: async () => far!,
    async checkBreak(t, f) {
      const from = sets.length;
      const r = await outcome(t.sendBreak(), 'sendBreak()');
      const calls = sets.slice(from);
      expect(calls[0]).toMatchObject({ brk: true });
      if (calls[0]!.error === undefined) {
        // A driver with BREAK (a UART): held for the break time (250 ms by default), then released.
        expect(r).toBe('resolved');
        expect(calls.map((c) => [c.brk, c.error])).toEqual([
          [true, undefined],
          [false, undefined],
        ]);
        expect(calls[1]!.at - calls[0]!.at).toBeGreaterThanOrEqual(240);
      } else {
        // A driver without (this kernel's ptys answer ENOTTY): the caller gets the driver's own words.
        expect(r).toBeInstanceOf(Error);
        expect((r as Error).message).toContain(calls[0]!.error);
        expect(calls).toHaveLength(1);
      }
      expect(await markerAt(t, f)).toBe('<after-break>'); // the line still carries data
    },
    async cleanup() {
      await pair.stop();
      await board?.close();
    },
  };
}

/**
 * Connectors made outside the registry. The container TTY (ContainerLeasePort.connector, attached by the
 * lease layer): its driver's attach() is stood in by a loopback socket wrapped in the real ContainerConsole,
 * which is what Docker's hijacked attach stream is; dockerode and the engine are not part of this contract.
 */
const OTHER_KINDS: Record<string, KindEntry> = {
  'container TTY': { breakPromise: 'rejects with a reason (a TTY has no BREAK)', make: containerTtyKind },
};

async function containerTtyKind(): Promise<Kind> {
  const server = new LoopbackServer(await freePort(), rawEnd);
  const nowhere = await freePort();
  await server.start();
  const ttyAt = (port: number) => {
    const attach = () =>
      new Promise<ContainerConsole>((resolve, reject) => {
        const sock = dial({ host: '127.0.0.1', port });
        sock.once('error', reject);
        sock.once('connect', () => {
          sock.removeListener('error', reject);
          resolve(new ContainerConsole(sock, async () => {}));
        });
      });
    // Only attach() is used by the connector; the rest of the driver needs Docker.
    return new ContainerLeasePort({ attach } as unknown as ContainerLeaseDriver, []).connector('L-contract');
  };
  return {
    connector: () => ttyAt(server.port),
    absent: () => ttyAt(nowhere),
    absentError: /ECONNREFUSED/,
    open: () => new ReconnectingSource(ttyAt(server.port), BACKOFF), // as ConsoleSessions.attach does
    up: () => server.start(),
    down: () => server.stop(),
    farEnd: () => server.next(),
    checkBreak: (t, far) => checkRefusedBreak(t, far, /container TTY has no BREAK/),
    cleanup: () => server.stop(),
  };
}

/** A connected transport with its far end, after the far end's hello reached the console. */
async function connected(kind: Kind): Promise<{ t: Transport; far: FarEnd; fromLine: Bytes; lost: Seen<Error> }> {
  const t = await within(kind.connector().connect(), 'connect()');
  const fromLine = new Bytes();
  const lost = new Seen<Error>((e) => JSON.stringify(e.map((x) => x.message)));
  t.on('data', fromLine.add);
  t.on('disconnected', lost.add);
  const far = await kind.farEnd();
  await hello(far, fromLine);
  return { t, far, fromLine, lost };
}

let hellos = 0;
/** The far end speaks first and the console hears it: both ends are up (and telnet options agreed). */
async function hello(far: FarEnd, fromLine: Bytes): Promise<void> {
  const mark = fromLine.length;
  const hi = Buffer.from(`<hello ${++hellos}>`);
  await far.send(hi);
  await fromLine.wait('the far end’s hello at the console', () => fromLine.since(mark).includes(hi));
}

describe('console source registry', () => {
  it('the contract runs every kind of line the registry makes', () => {
    expect(Object.keys(KINDS).sort()).toEqual(Object.keys(CONSOLE_SOURCES).sort());
  });

  it('takes each line as its kind, and the connector names the line', () => {
    const lines = { device: '/dev/serial/by-id/usb-FTDI-if00', tcp: 'tcp://10.0.0.5:3001', telnet: 'telnet://[fd00::5]:2001' };
    expect(Object.keys(lines).sort()).toEqual(Object.keys(CONSOLE_SOURCES).sort());
    for (const [kind, line] of Object.entries(lines)) expect(consoleSourceKind(line)).toBe(kind);
    expect(connectorFor(lines.device, { baudRate: 1_500_000 }).target).toBe('/dev/serial/by-id/usb-FTDI-if00 @1500000');
    expect(connectorFor(lines.tcp).target).toBe('tcp://10.0.0.5:3001');
    expect(connectorFor(lines.telnet).target).toBe('telnet://[fd00::5]:2001');
  });

  it('an unsupported line fails with the forms a line may take', () => {
    for (const bad of ['ttyUSB0', 'COM3', 'ssh://h:22', 'rfc2217://h:1', 'constructor', '']) {
      expect(consoleSourceKind(bad)).toBeUndefined();
      expect(() => connectorFor(bad)).toThrow(`unsupported console line ${JSON.stringify(bad)}: use a device path, tcp://host:port or telnet://host:port`);
    }
    expect(() => openConsoleSource('ftp://h:21')).toThrow(/^unsupported console line "ftp:\/\/h:21"/);
    expect(() => connectorFor('telnet://h')).toThrow('telnet://h: need host and port');
  });
});

for (const [name, { breakPromise, make }] of Object.entries({ ...KINDS, ...OTHER_KINDS })) {
  describe(`console source contract: ${name}`, () => {
    let kind: Kind;
    let isUp = true;
    const goDown = async () => {
      isUp = false;
      await kind.down();
    };
    const comeBack = async () => {
      await kind.up();
      isUp = true;
    };
    beforeAll(async () => {
      kind = await make();
    });
    beforeEach(async () => {
      if (!isUp) await comeBack(); // a test that failed while its line was down does not fail the next ones
    });
    afterAll(async () => {
      await kind?.cleanup();
    });

    it('connect() to a line that is not there rejects', async () => {
      await expect(within(kind.absent().connect(), 'connect() to nothing')).rejects.toThrow(kind.absentError);
    });

    it('carries every byte value intact both ways; close() twice resolves and is no disconnect', async () => {
      const { t, far, fromLine, lost } = await connected(kind);
      let mark = fromLine.length;
      await far.send(ALL);
      expect([...(await fromLine.waitBytes(mark, 256, 'all 256 byte values at the console'))]).toEqual([...ALL]);

      mark = far.data.length;
      const wireMark = far.wire?.length ?? 0;
      await t.write(ALL_REVERSED);
      expect([...(await far.data.waitBytes(mark, 256, 'all 256 byte values at the far end'))]).toEqual([...ALL_REVERSED]);
      // telnet: on the wire IAC is doubled, nothing else changes (binary mode: no CR NUL)
      if (far.wire) expect([...far.wire.since(wireMark)]).toEqual([...escapeIac(ALL_REVERSED)]);

      await within(t.close(), 'close()');
      await within(t.close(), 'close() again');
      if (far.hungUp) await within(far.hungUp, 'the far end seeing the console hang up');
      expect(lost.items).toEqual([]);
    });

    it(`sendBreak(): ${breakPromise}`, async () => {
      const { t, far } = await connected(kind);
      try {
        await kind.checkBreak(t, far);
      } finally {
        await t.close();
      }
    });

    it('the far end going away: "disconnected" exactly once; then write() rejects and close() resolves, twice', async () => {
      const { t, lost } = await connected(kind);
      await goDown();
      const [err] = await lost.wait('disconnected', (e) => e.length > 0 && e);
      expect(err).toBeInstanceOf(Error);
      expect(err!.message).not.toBe('');
      // A barrier before counting: the line comes back and a new connection carries bytes. By then the old
      // transport has had every event its lost connection will bring, and (left alone) said nothing more.
      await comeBack();
      const again = await connected(kind);
      await again.t.close();
      expect(lost.items).toHaveLength(1);

      const write = t.write(Buffer.from('into the void'));
      expect(await outcome(write, 'write() after disconnected')).toBeInstanceOf(Error);
      await within(t.close(), 'close() after disconnected');
      await within(t.close(), 'close() again');
      expect(lost.items).toHaveLength(1);
    });

    it('openConsoleSource(): connecting → connected → disconnected → connected again, as state events; write() rejects while down, never queued', async () => {
      const src = kind.open();
      const states = new Seen<ConsoleState>((s) => JSON.stringify(s.map((x) => [x.state, x.attempts, x.lastError])));
      const fromLine = new Bytes();
      src.on('state', states.add);
      src.on('data', fromLine.add);
      try {
        expect(src.state()).toMatchObject({ state: 'connecting', target: src.target, attempts: 0 });
        await states.wait('connected', (s) => s.some((x) => x.state === 'connected'));
        let far = await kind.farEnd();
        await hello(far, fromLine);
        const before = far.data.length;
        await src.write(Buffer.from('typed while up'));
        expect((await far.data.waitBytes(before, 14, 'input while up')).toString()).toBe('typed while up');

        await goDown();
        const down = await states.wait('disconnected', (s) => s.find((x) => x.state === 'disconnected'));
        expect(down.lastError).toEqual(expect.any(String));
        expect(await outcome(src.write(Buffer.from('typed while down')), 'write() while down')).toMatchObject({ message: expect.stringMatching(/ is disconnected/) });
        expect(await outcome(src.sendBreak(), 'sendBreak() while down')).toMatchObject({ message: expect.stringMatching(/ is disconnected/) });
        // it keeps trying: a failed attempt is told (its reason replaces the disconnect's)
        await states.wait('a failed attempt while down', (s) => s.some((x) => x.state === 'disconnected' && x.attempts >= 1));

        await comeBack();
        const n = states.items.length;
        await states.wait('connected again', (s) => s.slice(n).some((x) => x.state === 'connected'));
        far = await kind.farEnd();
        await hello(far, fromLine);
        await src.write(Buffer.from('typed after'));
        await far.data.waitBytes(0, 11, 'input after the reconnect');
        expect(far.data.since(0).toString()).toBe('typed after'); // what was typed while down never arrives
        const path = states.items.map((s) => s.state).filter((s, i, a) => s !== a[i - 1]);
        expect(path).toEqual(['connected', 'disconnected', 'connected']);
      } finally {
        await src.close();
      }
      expect(src.state().state).toBe('closed');
      expect(states.items.at(-1)?.state).toBe('closed');
      expect(await outcome(src.write(Buffer.from('x')), 'write() after close()')).toMatchObject({ message: expect.stringMatching(/ is closed/) });
    });
  });
}

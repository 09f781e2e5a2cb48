/**
 * `ssh console+<lease>@gateway` end to end, with nothing faked but the board: the real OpenSSH client,
 * the gateway, the real BoardSession (scrollback, fan-out) reading a real serial source, a socat pty pair
 * as the serial line, and the test writing and reading the board's end of that line.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BoardSession } from '../../src/console/session.js';
import { openConsoleSource } from '../../src/console/sources.js';
import { attachBoardSession } from '../../src/gateway/board-console.js';
import type { SshGateway } from '../../src/gateway/gateway.js';
import { PtyPair } from '../console/pty-pair.js';
import { requireTools } from '../helpers/tools.js';
import { until } from '../helpers/until.js';
import { Leases, makeKey, requireSshTools, sshBase, start, startGateway, tempDir } from './harness.js';

describe('ssh gateway: serial console', () => {
  const tmp = tempDir();
  const leases = new Leases();
  const pty = new PtyPair(join(tmp.path, 'line.tty'), join(tmp.path, 'board.tty'));
  let board: Awaited<ReturnType<PtyPair['openBoard']>>;
  let session: BoardSession;
  let gw: SshGateway;
  let keyA: { key: string; pub: string };
  let keyB: { key: string; pub: string };
  let got = '';
  let maxViewers: number | undefined;

  const consoleSsh = (key: string, lease: string) => start('ssh', [...sshBase(key), '-tt', '-e', 'none', '-p', String(gw.port), `console+${lease}@127.0.0.1`], { timeoutMs: 30_000 });

  beforeAll(async () => {
    requireSshTools();
    requireTools('socat');
    keyA = makeKey(tmp.path, 'tenant-a');
    keyB = makeKey(tmp.path, 'tenant-b');
    await pty.start();
    board = await pty.openBoard();
    session = new BoardSession('board-a', pty.line, openConsoleSource(pty.line), 64 * 1024);
    session.on('data', (c) => (got += c.toString()));
    await until('console line connected', () => session.state().state === 'connected', { timeoutMs: 10_000 });
    leases.set({ id: 'lease-a', tenantId: 'tenant-a', sshKeys: [keyA.pub], boardId: 'board-a', boardIp: '127.0.0.2', active: true, epoch: 1 });
    leases.set({ id: 'lease-b', tenantId: 'tenant-b', sshKeys: [keyB.pub], boardId: 'board-b', boardIp: '127.0.0.3', active: true });
    gw = await startGateway(tmp.path, {
      lease: leases.get,
      attachConsole: (lease, who, sink) => (lease.boardId === 'board-a' ? attachBoardSession(session, who, sink, maxViewers) : undefined),
    });
    // What the board printed before anyone attached: the scrollback.
    await board.port.write('U-Boot 2025.01 earlier-boot-output\r\n');
    await until('scrollback reached the session', () => got.includes('earlier-boot-output'), { timeoutMs: 5000 });
  });

  afterAll(async () => {
    await gw?.close();
    await session?.close('test over');
    await board?.close().catch(() => {});
    await pty.stop();
    tmp.remove();
  });

  it('shows the notice, then the scrollback, then live output; keystrokes reach the board; ~. leaves', async () => {
    const ssh = consoleSsh(keyA.key, 'lease-a');
    await ssh.waitFor('earlier-boot-output');
    expect(ssh.stdout().indexOf('[dozen] console of lease lease-a — ~. to leave')).toBe(0);

    await board.port.write('live-line-after-attach\r\n');
    await ssh.waitFor('live-line-after-attach');
    expect(ssh.stdout().indexOf('live-line-after-attach')).toBeGreaterThan(ssh.stdout().indexOf('earlier-boot-output'));

    ssh.write('typed-abc\r');
    await until('typed bytes on the board', () => board.received().toString().includes('typed-abc\r'), { timeoutMs: 5000 });
    // `~.` in the middle of a line is text, not an escape.
    ssh.write('x~.y\r');
    await until('mid-line ~. on the board', () => board.received().toString().includes('x~.y\r'), { timeoutMs: 5000 });
    expect(gw.stats().channels).toBe(1);

    ssh.write('~.');
    const r = await ssh.exited;
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('[dozen] left the console');
    expect(board.received().toString()).toBe('typed-abc\rx~.y\r'); // the escape itself never reached the line
    expect(gw.stats().channels).toBe(0);
    expect(session.viewerList()).toEqual([]);
  });

  it('~. as the very first keystroke leaves too', async () => {
    const ssh = consoleSsh(keyA.key, 'lease-a');
    await ssh.waitFor('earlier-boot-output');
    ssh.write('~.');
    expect((await ssh.exited).code).toBe(0);
  });

  it("B's key cannot open A's console, and B's own lease has no console line here", async () => {
    const stolen = await consoleSsh(keyB.key, 'lease-a').exited;
    expect(stolen.code).toBe(255);
    expect(stolen.stderr).toContain('Permission denied (publickey)');
    expect(stolen.stdout).not.toContain('earlier-boot-output');
    const own = await consoleSsh(keyB.key, 'lease-b').exited;
    expect(own.stdout).toContain('[dozen] this lease has no console line');
    expect(own.code).toBe(1);
  });

  it('releasing the lease closes an open console with a message, and it cannot be reopened', async () => {
    const ssh = consoleSsh(keyA.key, 'lease-a');
    await ssh.waitFor('earlier-boot-output');
    leases.update('lease-a', { active: false });
    try {
      const r = await ssh.exited;
      expect(r.stdout).toContain('[dozen] console closed: lease lease-a is no longer active');
      expect(r.code).toBe(1);
      const again = await consoleSsh(keyA.key, 'lease-a').exited;
      expect(again.code).toBe(255);
      expect(again.stderr).toContain('Permission denied (publickey)');
    } finally {
      leases.update('lease-a', { active: true });
    }
    expect(session.viewerList()).toEqual([]);
  });

  it('a reimage (new epoch) closes an open console', async () => {
    const ssh = consoleSsh(keyA.key, 'lease-a');
    await ssh.waitFor('earlier-boot-output');
    leases.update('lease-a', { epoch: 2 });
    const r = await ssh.exited;
    expect(r.stdout).toContain('[dozen] console closed: lease lease-a was reimaged');
    expect(r.code).toBe(1);
  });

  it('a console with viewersPerConsole viewers refuses one more, with the reason', async () => {
    maxViewers = 1;
    try {
      const first = consoleSsh(keyA.key, 'lease-a');
      await first.waitFor('earlier-boot-output');
      const second = await consoleSsh(keyA.key, 'lease-a').exited;
      expect(second.stdout).toContain('[dozen] console refused: this console has 1 viewers already');
      expect(second.stdout).not.toContain('earlier-boot-output');
      expect(second.code).toBe(1);
      expect(session.viewerList()).toHaveLength(1);
      first.write('~.');
      expect((await first.exited).code).toBe(0);
    } finally {
      maxViewers = undefined;
    }
  });

  it('the console going away (session closed by the server) ends the channel with its reason', async () => {
    const ssh = consoleSsh(keyA.key, 'lease-a');
    await ssh.waitFor('earlier-boot-output');
    const [viewer] = session.viewerList();
    expect(viewer?.who).toBe('tenant-a (ssh)');
    await session.close('board removed from inventory');
    const r = await ssh.exited;
    expect(r.stdout).toContain('[dozen] console closed: board removed from inventory');
    expect(r.code).toBe(1);
  });
});

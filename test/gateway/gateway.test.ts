/**
 * The SSH gateway with the real OpenSSH client and two real sshd "boards" (127.0.0.2 and 127.0.0.3).
 * Both boards authorize BOTH tenants' keys: whatever keeps tenant A off board B is the gateway alone.
 */
import { writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import ssh2 from 'ssh2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SshGateway } from '../../src/gateway/gateway.js';
import { Board, Leases, jumpArgs, makeKey, requireSshTools, run, sshBase, start, startGateway, tempDir } from './harness.js';

const IP_A = '127.0.0.2';
const IP_B = '127.0.0.3';

describe('ssh gateway: jumps to boards', () => {
  const tmp = tempDir();
  const leases = new Leases();
  const boardA = new Board(tmp.path, 'board-a', IP_A);
  const boardB = new Board(tmp.path, 'board-b', IP_B);
  let keyA: { key: string; pub: string };
  let keyB: { key: string; pub: string };
  let gw: SshGateway;
  let decoy: Server;
  let decoyPort = 0;
  let decoyHits = 0;

  beforeAll(async () => {
    requireSshTools();
    keyA = makeKey(tmp.path, 'tenant-a');
    keyB = makeKey(tmp.path, 'tenant-b');
    await boardA.start([keyA.pub, keyB.pub]);
    await boardB.start([keyA.pub, keyB.pub]);
    // Another service on board A's address: a jump there must never reach it.
    decoy = createServer((s) => {
      decoyHits++;
      s.destroy();
    });
    await new Promise<void>((r) => decoy.listen(0, IP_A, r));
    decoyPort = (decoy.address() as { port: number }).port;
    leases.set({ id: 'lease-a', tenantId: 'tenant-a', sshKeys: [keyA.pub], boardId: 'board-a', boardIp: IP_A, active: true });
    leases.set({ id: 'lease-b', tenantId: 'tenant-b', sshKeys: [keyB.pub], boardId: 'board-b', boardIp: IP_B, active: true });
    leases.set({ id: 'lease-idle', tenantId: 'tenant-a', sshKeys: [keyA.pub], boardId: 'board-a', boardIp: IP_A, active: false });
    // Both boards listen on their own high port; the gateway's one allowed port is board A's (B's differs,
    // so B's jumps go through a second gateway below: one allowed port per gateway, as in production).
    gw = await startGateway(tmp.path, { lease: leases.get, attachConsole: () => undefined }, { boardSshPort: boardA.port });
  });

  afterAll(async () => {
    await gw?.close();
    await boardA.stop();
    await boardB.stop();
    await new Promise<void>((r) => (decoy ? decoy.close(() => r()) : r()));
    tmp.remove();
  });

  it("tenant A's key jumps to A's board with ssh -J and runs commands on the real sshd", async () => {
    const cfg = join(tmp.path, 'ssh_config_a');
    writeFileSync(
      cfg,
      ['Host *', '  BatchMode yes', '  StrictHostKeyChecking no', '  UserKnownHostsFile /dev/null', '  IdentitiesOnly yes', '  IdentityAgent none', `  IdentityFile ${keyA.key}`, '  LogLevel ERROR', ''].join('\n'),
    );
    const r = await run('ssh', ['-F', cfg, '-J', `lease-a@127.0.0.1:${gw.port}`, '-p', String(boardA.port), `root@${IP_A}`, 'echo ok-$DOZEN_BOARD; hostname']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout.split('\n')[0]).toBe('ok-board-a');
    expect(r.stdout.split('\n')[1]).toMatch(/\S/);
  });

  it('the same jump works through ProxyCommand (ssh -W), and the tunnel is closed after', async () => {
    const r = await run('ssh', jumpArgs(gw, keyA.key, 'lease-a', IP_A, boardA.port, 'echo ok-$DOZEN_BOARD'));
    expect(r.stdout.trim()).toBe('ok-board-a');
    expect(r.code).toBe(0);
    await expect.poll(() => gw.stats().channels).toBe(0);
  });

  it("A's key on B's lease id is refused (the jump user's authentication fails)", async () => {
    const r = await run('ssh', [...sshBase(keyA.key), '-p', String(gw.port), '-W', `${IP_B}:${boardB.port}`, 'lease-b@127.0.0.1']);
    expect(r.code).toBe(255);
    expect(r.stderr).toContain('Permission denied (publickey)');
  });

  it("A's lease to B's board IP is refused, though B's sshd would take A's key", async () => {
    // Control: B's board accepts A's key when reached by B's lease through a gateway whose port is B's.
    const gwB = await startGateway(tmp.path, { lease: leases.get, attachConsole: () => undefined }, { boardSshPort: boardB.port });
    try {
      const leaseBWithA = 'lease-b2';
      leases.set({ id: leaseBWithA, tenantId: 'tenant-b', sshKeys: [keyB.pub, keyA.pub], boardId: 'board-b', boardIp: IP_B, active: true });
      const ok = await run('ssh', jumpArgs(gwB, keyA.key, leaseBWithA, IP_B, boardB.port, 'echo ok-$DOZEN_BOARD'));
      expect(ok.stdout.trim()).toBe('ok-board-b');
      // The attack: A's own lease, B's board address and the port the gateway allows.
      const r = await run('ssh', jumpArgs(gwB, keyA.key, 'lease-a', IP_B, boardB.port, 'echo ok-$DOZEN_BOARD'));
      expect(r.stdout).not.toContain('ok-board-b');
      expect(r.code).toBe(255);
      expect(r.stderr).toMatch(/stdio forwarding failed/); // refused after A authenticated on lease-a
    } finally {
      leases.map.delete('lease-b2');
      await gwB.close();
    }
  });

  it("a jump to another port of A's own board is refused and never reaches it", async () => {
    const r = await run('ssh', [...sshBase(keyA.key, 'INFO'), '-p', String(gw.port), '-W', `${IP_A}:${decoyPort}`, 'lease-a@127.0.0.1']);
    expect(r.code).toBe(255);
    expect(r.stderr).toMatch(/channel 0: open failed: connect failed[^]*stdio forwarding failed/);
    expect(decoyHits).toBe(0);
  });

  it('a lease that is not active is refused', async () => {
    const r = await run('ssh', jumpArgs(gw, keyA.key, 'lease-idle', IP_A, boardA.port, 'echo ok-$DOZEN_BOARD'));
    expect(r.stdout).not.toContain('ok-board-a');
    expect(r.code).toBe(255);
    expect(r.stderr).toContain('Permission denied (publickey)');
  });

  it("console+B with A's key is refused", async () => {
    const r = await run('ssh', [...sshBase(keyA.key), '-tt', '-p', String(gw.port), 'console+lease-b@127.0.0.1']);
    expect(r.code).toBe(255);
    expect(r.stderr).toContain('Permission denied (publickey)');
  });

  it('the console user cannot tunnel, even to its own board', async () => {
    const r = await run('ssh', [...sshBase(keyA.key, 'INFO'), '-p', String(gw.port), '-W', `${IP_A}:${boardA.port}`, 'console+lease-a@127.0.0.1']);
    expect(r.code).toBe(255);
    expect(r.stderr).toMatch(/channel 0: open failed: connect failed[^]*stdio forwarding failed/);
  });

  it('exec on the jump user is refused; a plain login prints how to jump, then closes', async () => {
    const exec = await run('ssh', [...sshBase(keyA.key), '-p', String(gw.port), 'lease-a@127.0.0.1', 'echo EXECUTED']);
    expect(exec.code).toBe(255);
    expect(exec.stderr).toContain('exec request failed');
    expect(exec.stdout).not.toContain('EXECUTED');
    const shell = await run('ssh', [...sshBase(keyA.key), '-tt', '-p', String(gw.port), 'lease-a@127.0.0.1'], { timeoutMs: 10_000 });
    expect(shell.code).toBe(1);
    expect(shell.stdout).toContain(`ssh -J lease-a@127.0.0.1:${gw.port} root@${IP_A}`);
    expect(shell.stdout.trim().split('\n')).toHaveLength(1);
  });

  it('an RSA key authenticates too (rsa-sha2-512 signatures are verified with their hash)', async () => {
    const rsa = makeKey(tmp.path, 'tenant-a-rsa', 'rsa');
    leases.update('lease-a', { sshKeys: [keyA.pub, rsa.pub] });
    try {
      const r = await run('ssh', [...sshBase(rsa.key), '-tt', '-p', String(gw.port), 'lease-a@127.0.0.1'], { timeoutMs: 10_000 });
      expect(r.stdout).toContain('[dozen] no shell here');
      expect(r.code).toBe(1);
    } finally {
      leases.update('lease-a', { sshKeys: [keyA.pub] });
    }
  });

  it('remote port forwarding (tcpip-forward) is refused', async () => {
    const r = await run('ssh', [...sshBase(keyA.key), '-N', '-o', 'ExitOnForwardFailure=yes', '-R', `0:${IP_A}:${boardA.port}`, '-p', String(gw.port), 'lease-a@127.0.0.1'], { timeoutMs: 10_000 });
    expect(r.code).toBe(255);
    expect(r.stderr).toMatch(/remote port forwarding failed/);
  });

  it('agent and X11 forwarding, env and subsystems are refused on the jump user (ssh2 client)', async () => {
    const results = await withSsh2Client(gw, 'lease-a', keyA.key, async (c) => {
      const out: Record<string, string> = {};
      await new Promise<void>((resolve) => {
        c.shell({ x11: { single: true, screen: 0 } } as never, (err) => {
          out.x11 = err ? err.message : 'granted';
          resolve();
        });
      });
      await new Promise<void>((resolve) => {
        c.subsys('sftp', (err) => {
          out.sftp = err ? err.message : 'granted';
          resolve();
        });
      });
      await new Promise<void>((resolve) => {
        c.exec('true', { env: { A: '1' } }, (err) => {
          out.exec = err ? err.message : 'granted';
          resolve();
        });
      });
      return out;
    });
    results.agent = await withSsh2Client(gw, 'lease-a', keyA.key, (c) =>
      new Promise<string>((resolve) => c.shell({ agentForward: true } as never, (err) => resolve(err ? err.message : 'granted'))),
      { agent: true },
    );
    expect(results.x11).toBe('Unable to request X11');
    expect(results.agent).toBe('Unable to request agent forwarding');
    expect(results.sftp).toMatch(/Unable to start subsystem/);
    expect(results.exec).toMatch(/Unable to exec/);
  });

  it("presenting A's public key without A's private key fails: the signature is verified", async () => {
    const { readFileSync } = await import('node:fs');
    const pubA = ssh2.utils.parseKey(keyA.pub) as ssh2.ParsedKey;
    /** An agent that offers A's public key and signs with whatever private key it is given. */
    const agentSigningWith = (privateKeyFile: string) => {
      const priv = ssh2.utils.parseKey(readFileSync(privateKeyFile)) as ssh2.ParsedKey;
      return new (class extends ssh2.BaseAgent<ssh2.ParsedKey> {
        getIdentities(cb: (err: Error | undefined, keys?: ssh2.ParsedKey[]) => void) {
          cb(undefined, [pubA]);
        }
        sign(_pub: ssh2.ParsedKey, data: Buffer, ...rest: unknown[]) {
          const cb = rest.at(-1) as (err: Error | undefined, sig?: Buffer) => void;
          cb(undefined, priv.sign(data));
        }
      })();
    };
    const attempt = (agent: ssh2.BaseAgent) =>
      new Promise<string>((resolve) => {
        const c = new ssh2.Client();
        c.on('ready', () => {
          c.end();
          resolve('authenticated');
        });
        c.on('error', (err) => resolve(err.message));
        c.connect({ host: '127.0.0.1', port: gw.port, username: 'lease-a', agent, authHandler: ['agent'] });
      });
    expect(await attempt(agentSigningWith(keyB.key))).toMatch(/All configured authentication methods failed/);
    expect(await attempt(agentSigningWith(keyA.key))).toBe('authenticated'); // control: the same path with the right key
  });

  it('password, keyboard-interactive and none are refused; publickey is the only method offered', async () => {
    const offered: string[][] = [];
    const err = await new Promise<Error>((resolve) => {
      const c = new ssh2.Client();
      const methods = ['none', 'password', 'keyboard-interactive'];
      c.on('error', resolve);
      c.on('ready', () => resolve(new Error('authenticated!')));
      c.connect({
        host: '127.0.0.1',
        port: gw.port,
        username: 'lease-a',
        tryKeyboard: true,
        authHandler: (methodsLeft, _partial, next) => {
          if (methodsLeft) offered.push(methodsLeft);
          const m = methods.shift();
          if (!m) return next(false as never);
          if (m === 'password') return next({ type: 'password', username: 'lease-a', password: 'lease-a' });
          if (m === 'keyboard-interactive') return next({ type: 'keyboard-interactive', username: 'lease-a', prompt: (_n, _i, _l, _p, finish) => finish(['x']) });
          return next({ type: 'none', username: 'lease-a' });
        },
      });
    });
    expect(err.message).toMatch(/All configured authentication methods failed/);
    expect(offered.length).toBeGreaterThanOrEqual(2);
    for (const m of offered) expect(m).toEqual(['publickey']);
  });

  it('an unknown lease and a wrong key fail with the same text, at every step of authentication', async () => {
    const steps = async (user: string) => {
      const r = await run('ssh', [...sshBase(keyB.key, 'DEBUG1'), '-p', String(gw.port), `${user}@127.0.0.1`, 'true']);
      expect(r.code).toBe(255);
      return r.stderr
        .split('\n')
        .filter((l) => /Authentications that can continue|Server accepts key|Offering public key|Permission denied|Authenticated|send_pubkey_test|Trying private key/.test(l))
        .map((l) => l.replaceAll(user, '<user>').replace(/\r$/, ''));
    };
    const wrongKey = await steps('lease-a'); // B's key, A's lease
    const unknown = await steps('no-such-lease');
    const malformed = await steps('../../etc');
    expect(wrongKey).toContain('<user>@127.0.0.1: Permission denied (publickey).');
    expect(wrongKey.some((l) => l.includes('Server accepts key'))).toBe(true); // every query is answered alike
    expect(unknown).toEqual(wrongKey);
    expect(malformed).toEqual(wrongKey);
  });

  it('an open tunnel closes when the lease is released under it', async () => {
    const p = start('ssh', jumpArgs(gw, keyA.key, 'lease-a', IP_A, boardA.port, 'echo started; sleep 30'), { timeoutMs: 25_000 });
    await p.waitFor('started');
    expect(gw.stats().channels).toBe(1);
    const released = Date.now();
    leases.update('lease-a', { active: false });
    try {
      const r = await p.exited;
      expect(r.code).toBe(255);
      expect(Date.now() - released).toBeLessThan(3000);
      expect(gw.stats().channels).toBe(0);
    } finally {
      leases.update('lease-a', { active: true });
    }
  });
});

async function withSsh2Client<T>(gw: SshGateway, user: string, keyPath: string, fn: (c: ssh2.Client) => Promise<T>, o: { agent?: boolean } = {}): Promise<T> {
  const { readFileSync } = await import('node:fs');
  const c = new ssh2.Client();
  await new Promise<void>((resolve, reject) => {
    c.on('ready', () => resolve());
    c.on('error', reject);
    // An agent path (never used: the forwarding request is refused) lets ssh2 ask for agent forwarding.
    const agent: ssh2.ConnectConfig = o.agent ? { agent: '/nonexistent/agent.sock', agentForward: true, authHandler: ['publickey'] } : {};
    c.connect({ host: '127.0.0.1', port: gw.port, username: user, privateKey: readFileSync(keyPath), ...agent });
  });
  try {
    return await fn(c);
  } finally {
    c.end();
  }
}

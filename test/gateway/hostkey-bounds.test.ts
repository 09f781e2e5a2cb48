import { execFileSync } from 'node:child_process';
import { chmodSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import ssh2 from 'ssh2';
import type { GatewayLease, SshGateway } from '../../src/gateway/gateway.js';
import { generateHostKey } from '../../src/gateway/host-key.js';
import { Leases, makeKey, requireSshTools, run, sshBase, startGateway, tempDir } from './harness.js';

const tmp = tempDir();
afterAll(() => tmp.remove());

/** The ed25519 host key a server at port presents, as `ssh-ed25519 AAAA…`. */
async function scannedKey(port: number): Promise<string> {
  const r = await run('ssh-keyscan', ['-t', 'ed25519', '-p', String(port), '127.0.0.1']);
  const line = r.stdout.split('\n').find((l) => l.includes('ssh-ed25519'));
  if (!line) throw new Error(`ssh-keyscan found no key: ${r.stderr}`);
  return line.split(' ').slice(1, 3).join(' ');
}

describe('ssh gateway host key', () => {
  beforeAll(() => requireSshTools());
  const deps = { lease: () => undefined, attachConsole: () => undefined };

  it('is created once (0600, in a directory made for it) and reused across restarts', async () => {
    const path = join(tmp.path, 'state', 'ssh', 'gateway_host_ed25519_key');
    const first = await startGateway(tmp.path, deps, { hostKeyPath: path });
    let content: string;
    let presented: string;
    try {
      expect(statSync(path).mode & 0o777).toBe(0o600);
      content = readFileSync(path, 'utf8');
      const derived = execFileSync('ssh-keygen', ['-y', '-f', path], { encoding: 'utf8' }).trim().split(' ').slice(0, 2).join(' ');
      expect(derived).toMatch(/^ssh-ed25519 /);
      presented = await scannedKey(first.port);
      expect(presented).toBe(derived);
      expect(first.hostPublicKey).toBe(derived);
    } finally {
      await first.close();
    }
    const second = await startGateway(tmp.path, deps, { hostKeyPath: path });
    try {
      expect(readFileSync(path, 'utf8')).toBe(content);
      expect(await scannedKey(second.port)).toBe(presented);
    } finally {
      await second.close();
    }
  });

  it('every generated key parses back with a 32-byte public key (ssh2 alone gets ~1 in 256 wrong)', () => {
    // 4,000 draws: without the check, the chance that none is malformed is (255/256)^4000 < 1e-6.
    for (let i = 0; i < 4000; i++) {
      const key = ssh2.utils.parseKey(generateHostKey().private);
      if (key instanceof Error || Array.isArray(key)) throw new Error(`draw ${i}: ${key instanceof Error ? key.message : 'several keys'}`);
      // ssh-ed25519 wire form: string "ssh-ed25519" (4 + 11 bytes), then string key (4 + 32 bytes).
      expect(key.getPublicSSH().length).toBe(4 + 11 + 4 + 32);
    }
  });

  it('refuses a key file others can read, and one that holds no private key (leaving it as it was)', async () => {
    const open = join(tmp.path, 'open_key');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', open]);
    chmodSync(open, 0o644);
    await expect(startGateway(tmp.path, deps, { hostKeyPath: open })).rejects.toThrow(/readable by others/);
    const junk = join(tmp.path, 'junk_key');
    writeFileSync(junk, 'not a key\n', { mode: 0o600 });
    await expect(startGateway(tmp.path, deps, { hostKeyPath: junk })).rejects.toThrow(/not an unencrypted private key/);
    expect(readFileSync(junk, 'utf8')).toBe('not a key\n');
  });
});

describe('ssh gateway bounds', () => {
  const leases = new Leases();
  let gw: SshGateway;
  let key: { key: string; pub: string };

  /** The gateway still serves: a real login with the tenant's key gets the usage hint. */
  const serves = async () => {
    const r = await run('ssh', [...sshBase(key.key), '-tt', '-p', String(gw.port), 'lease-a@127.0.0.1'], { timeoutMs: 10_000 });
    expect(r.stdout).toContain('[dozen] no shell here');
    expect(r.code).toBe(1);
  };

  const closedWithin = (s: Socket): Promise<number> => {
    const t0 = Date.now();
    return new Promise((resolve) => s.once('close', () => resolve(Date.now() - t0)));
  };
  const open = async (): Promise<Socket> => {
    const s = connect({ host: '127.0.0.1', port: gw.port });
    s.on('error', () => {});
    s.resume(); // read (and drop) the server's banner, or the socket never sees the server's close
    await new Promise((r) => s.once('connect', r));
    return s;
  };

  beforeAll(async () => {
    requireSshTools();
    key = makeKey(tmp.path, 'tenant-bounds');
    leases.set({ id: 'lease-a', tenantId: 't', sshKeys: [key.pub], boardId: 'b', boardIp: '127.0.0.2', active: true });
    const lease = (id: string): GatewayLease | undefined => {
      if (id === 'boom') throw new Error('lease service crashed');
      return leases.get(id);
    };
    gw = await startGateway(tmp.path, { lease, attachConsole: () => undefined }, { maxConnections: 2, authTimeoutMs: 700 });
  });
  afterAll(async () => gw?.close());

  it('a client that sends garbage is dropped; the server goes on', async () => {
    const s = await open();
    const closed = closedWithin(s);
    s.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n' + 'x'.repeat(70_000));
    expect(await closed).toBeLessThan(2000);
    const t = await open();
    const closed2 = closedWithin(t);
    t.write('SSH-2.0-evil\r\n');
    t.write(Buffer.from([0, 0, 0xff, 0xff, 0x10, 0x14, 1, 2, 3, 4, 5, 6, 7, 8, 9]));
    expect(await closed2).toBeLessThan(2000);
    await serves();
  });

  it('a connection that does not authenticate in time is closed (also one that never says hello)', async () => {
    const silent = await open();
    const hello = await open();
    hello.write('SSH-2.0-OpenSSH_9.2\r\n');
    const [a, b] = await Promise.all([closedWithin(silent), closedWithin(hello)]);
    for (const ms of [a, b]) {
      expect(ms).toBeGreaterThan(500);
      expect(ms).toBeLessThan(3000);
    }
    await serves();
  });

  it('connections beyond maxConnections are closed at once, and served again when slots free', async () => {
    const before = gw.stats().refusedConnections;
    const held = [await open(), await open()];
    const third = await open();
    expect(await closedWithin(third)).toBeLessThan(500);
    expect(gw.stats().refusedConnections).toBe(before + 1);
    for (const s of held) s.destroy();
    await expect.poll(() => gw.stats().connections).toBe(0);
    await serves();
  });

  it('a dependency that throws ends that connection only', async () => {
    const r = await run('ssh', [...sshBase(key.key), '-tt', '-p', String(gw.port), 'boom@127.0.0.1'], { timeoutMs: 10_000 });
    expect(r.code).toBe(255);
    await serves();
  });
});

describe('ssh gateway: one client address', () => {
  let gw: SshGateway;
  beforeAll(async () => {
    requireSshTools();
    gw = await startGateway(tmp.path, { lease: () => undefined, attachConsole: () => undefined }, { maxConnections: 10, maxPerAddress: 2 });
  });
  afterAll(async () => gw?.close());

  const open = async (from: string): Promise<Socket> => {
    const s = connect({ host: '127.0.0.1', port: gw.port, localAddress: from });
    s.on('error', () => {});
    s.resume();
    await new Promise((r) => s.once('connect', r));
    return s;
  };

  it('cannot hold more than maxPerAddress connections; another address still gets in', async () => {
    const held = [await open('127.0.0.1'), await open('127.0.0.1')];
    const third = await open('127.0.0.1');
    const closed = await new Promise<boolean>((resolve) => {
      third.once('close', () => resolve(true));
      setTimeout(() => resolve(false), 1000);
    });
    expect(closed).toBe(true);
    const other = await open('127.0.0.3');
    const otherClosed = await new Promise<boolean>((resolve) => {
      other.once('close', () => resolve(true));
      setTimeout(() => resolve(false), 1000);
    });
    expect(otherClosed).toBe(false);
    expect(gw.stats().refusedConnections).toBe(1);
    for (const s of [...held, other]) s.destroy();
  });
});

describe('ssh gateway: idle connections', () => {
  const leases = new Leases();
  let gw: SshGateway;
  let key: { key: string; pub: string };
  beforeAll(async () => {
    requireSshTools();
    key = makeKey(tmp.path, 'tenant-idle');
    leases.set({ id: 'lease-i', tenantId: 't', sshKeys: [key.pub], boardId: 'b', boardIp: '127.0.0.2', active: true });
    gw = await startGateway(tmp.path, { lease: (id) => leases.get(id), attachConsole: () => undefined }, { idleMs: 800 });
  });
  afterAll(async () => gw?.close());

  it('an authenticated connection with nothing open (ssh -N) is closed after idleMs, and its slot freed', async () => {
    const t0 = Date.now();
    // Without the idle limit this runs until the harness kills it at 15 s.
    const r = await run('ssh', [...sshBase(key.key), '-N', '-p', String(gw.port), 'lease-i@127.0.0.1'], { timeoutMs: 15_000 });
    const ms = Date.now() - t0;
    expect(ms, `ssh -N ran ${ms} ms: ${r.stderr}`).toBeLessThan(8_000);
    expect(ms).toBeGreaterThan(800);
    expect(r.code).toBe(255);
    await expect.poll(() => gw.stats().connections).toBe(0);
  });
});

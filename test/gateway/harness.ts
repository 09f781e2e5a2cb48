import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { log } from '../../src/log.js';
import { startSshGateway, type GatewayDeps, type GatewayLease, type SshGateway, type SshGatewayOptions } from '../../src/gateway/gateway.js';
import { requireTools } from '../helpers/tools.js';
import { until } from '../helpers/until.js';

export const SSHD = '/usr/sbin/sshd';

export function requireSshTools(): void {
  requireTools('ssh', 'ssh-keygen', 'ssh-keyscan', SSHD);
}

export function tempDir(): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), 'dozen-gw-'));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

/** A tenant's key pair made by ssh-keygen: `key` is the private key file, `pub` the one-line public key. */
export function makeKey(dir: string, name: string, type = 'ed25519'): { key: string; pub: string } {
  const key = join(dir, name);
  execFileSync('ssh-keygen', ['-q', '-t', type, '-N', '', '-C', name, '-f', key]);
  return { key, pub: readFileSync(`${key}.pub`, 'utf8').trim() };
}

/** A free TCP port on a loopback address (bound once at port 0 and released). */
export async function freePort(host: string): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, host, r));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

export async function canConnect(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host, port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** A real OpenSSH server standing in for a leased board: its own host key, `authorized` keys for root, DOZEN_BOARD=name in sessions. */
export class Board {
  private proc?: ChildProcess;
  private stderr = '';
  port = 0;
  constructor(
    readonly dir: string,
    readonly name: string,
    readonly ip: string,
  ) {}

  async start(authorized: string[]): Promise<void> {
    const d = join(this.dir, this.name);
    mkdirSync(d, { recursive: true });
    mkdirSync('/run/sshd', { recursive: true, mode: 0o755 }); // sshd's privilege separation directory
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(d, 'host_key')]);
    writeFileSync(join(d, 'authorized_keys'), authorized.join('\n') + '\n', { mode: 0o600 });
    this.port = await freePort(this.ip);
    const cfg = join(d, 'sshd_config');
    writeFileSync(
      cfg,
      [
        `HostKey ${join(d, 'host_key')}`,
        'PidFile none',
        `AuthorizedKeysFile ${join(d, 'authorized_keys')}`,
        'PermitRootLogin prohibit-password',
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        'UsePAM no',
        'StrictModes no',
        `SetEnv DOZEN_BOARD=${this.name}`,
        'LogLevel VERBOSE',
      ].join('\n') + '\n',
    );
    const proc = spawn(SSHD, ['-D', '-e', '-f', cfg, '-p', String(this.port), '-o', `ListenAddress=${this.ip}`], { stdio: ['ignore', 'ignore', 'pipe'] });
    this.proc = proc;
    proc.stderr!.on('data', (c: Buffer) => (this.stderr += c.toString()));
    await until(`sshd ${this.name} listening on ${this.ip}:${this.port}`, async () => {
      if (proc.exitCode !== null) throw new Error(`sshd ${this.name} exited ${proc.exitCode}: ${this.stderr}`);
      return canConnect(this.ip, this.port);
    }, { timeoutMs: 10_000, intervalMs: 50, detail: () => this.stderr });
  }

  log(): string {
    return this.stderr;
  }

  async stop(): Promise<void> {
    const p = this.proc;
    this.proc = undefined;
    if (!p || p.exitCode !== null) return;
    await new Promise<void>((r) => {
      p.once('exit', () => r());
      p.kill('SIGTERM');
    });
  }
}

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to its end (or kills it after timeoutMs), with optional stdin. */
export function run(cmd: string, args: string[], o: { input?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  const p = start(cmd, args, o);
  p.end(o.input ?? '');
  return p.exited;
}

export interface Running {
  stdout(): string;
  stderr(): string;
  write(s: string): void;
  end(s?: string): void;
  /** Resolves when stdout holds `text` (fails after timeoutMs, showing what came). */
  waitFor(text: string, timeoutMs?: number): Promise<void>;
  exited: Promise<RunResult>;
  kill(): void;
}

/** Starts a command whose stdin the test writes and whose output it watches; killed after timeoutMs. */
export function start(cmd: string, args: string[], o: { timeoutMs?: number } = {}): Running {
  const p = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  p.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  p.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  p.stdin.on('error', () => {});
  const timer = setTimeout(() => p.kill('SIGKILL'), o.timeoutMs ?? 20_000);
  const exited = new Promise<RunResult>((resolve) =>
    p.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    }),
  );
  return {
    stdout: () => stdout,
    stderr: () => stderr,
    write: (s) => void p.stdin.write(s),
    end: (s) => void p.stdin.end(s ?? ''),
    waitFor: async (text, timeoutMs = 10_000) => {
      await until(`${JSON.stringify(text)} in the output of ${cmd}`, () => stdout.includes(text) || (p.exitCode !== null ? Promise.reject(new Error(`${cmd} exited ${p.exitCode} before ${JSON.stringify(text)}: stdout ${JSON.stringify(stdout)} stderr ${JSON.stringify(stderr)}`)) : false), {
        timeoutMs,
        detail: () => `stdout ${JSON.stringify(stdout)}, stderr ${JSON.stringify(stderr)}`,
      });
    },
    exited,
    kill: () => p.kill('SIGKILL'),
  };
}

/** OpenSSH client options every test uses: no config, no agent, no known_hosts, this key only. */
export function sshBase(key: string, logLevel = 'ERROR'): string[] {
  return [
    '-F', '/dev/null',
    '-o', 'BatchMode=yes',
    '-o', 'StrictHostKeyChecking=no',
    '-o', 'UserKnownHostsFile=/dev/null',
    '-o', 'IdentitiesOnly=yes',
    '-o', 'IdentityAgent=none',
    '-o', `LogLevel=${logLevel}`,
    '-o', 'ConnectTimeout=10',
    '-i', key,
  ];
}

/** `ssh` through the gateway to `dest` (`-o ProxyCommand=ssh -W %h:%p user@gateway`): the jump user and key are the tenant's. */
export function jumpArgs(gw: SshGateway, key: string, jumpUser: string, destIp: string, destPort: number, command: string): string[] {
  const proxy = ['ssh', ...sshBase(key), '-p', String(gw.port), '-W', '%h:%p', `${jumpUser}@${gw.host}`].join(' ');
  return [...sshBase(key), '-o', `ProxyCommand=${proxy}`, '-p', String(destPort), `root@${destIp}`, command];
}

/** A lease table the test changes at will: the gateway asks it on each question. */
export class Leases {
  readonly map = new Map<string, GatewayLease>();
  set(l: GatewayLease): void {
    this.map.set(l.id, l);
  }
  update(id: string, patch: Partial<GatewayLease>): void {
    this.map.set(id, { ...this.map.get(id)!, ...patch });
  }
  get = (id: string): GatewayLease | undefined => this.map.get(id);
}

export async function startGateway(dir: string, deps: GatewayDeps, o: Partial<SshGatewayOptions> = {}): Promise<SshGateway> {
  return startSshGateway({ host: '127.0.0.1', port: 0, hostKeyPath: join(dir, 'gateway', 'host_key'), deps, log, recheckMs: 100, ...o });
}

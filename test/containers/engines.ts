/**
 * Real Docker engines and tools for the container tests (no mocks): wraps test/containers/dockerd.sh,
 * builds the armhf image (cached), makes SSH keys and runs the OpenSSH client.
 */
import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ContainerHostConfig } from '../../src/containers/host.js';
import { loadBuiltImage, type ContainerImageSource } from '../../src/containers/images.js';
import { requireRoot, requireTools } from '../helpers/tools.js';

const HERE = resolve(fileURLToPath(import.meta.url), '..');
const REPO = resolve(HERE, '../..');
const SCRIPT = join(HERE, 'dockerd.sh');

/** Everything these tests run; a missing one fails the test with the install hint (never a skip). */
export function requireContainerTools(): void {
  requireRoot();
  requireTools('dockerd', 'containerd', 'runc', 'docker-proxy', 'qemu-arm-static', 'update-binfmts', 'ssh', 'ssh-keygen', 'curl', 'nsenter', 'openssl', 'ip', 'iptables', 'dpkg-deb', 'tar', 'mkfs.btrfs');
}

function script(args: string[]): string {
  try {
    return execFileSync('bash', [SCRIPT, ...args], { encoding: 'utf8', timeout: 240_000, stdio: ['ignore', 'pipe', 'pipe'] }).trim();
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`dockerd.sh ${args.join(' ')} failed: ${(e.stderr ?? e.message).trim()}`);
  }
}

/** The shared local engine (host netns, unix socket), started once and left running. */
export function startSharedEngine(): string {
  return script(['start']);
}

export interface RemoteEngine {
  name: string;
  socket: string;
  host: string;
  port: number;
  ca: string;
  cert: string;
  key: string;
  sshHost: string;
  storageDriver: string;
}

/** An engine in its own netns, reached over TCP+TLS like a real board (see dockerd.sh). */
export function startRemoteEngine(name: string, opts: { btrfs?: boolean } = {}): RemoteEngine {
  const file = script(['start-remote', name, ...(opts.btrfs ? ['--btrfs'] : [])]);
  return JSON.parse(readFileSync(file, 'utf8')) as RemoteEngine;
}

export function stopEngine(name: string): void {
  script(['stop', name]);
}

export function destroyEngine(name: string): void {
  script(['destroy', name]);
}

/** Host config for a remote engine: TLS with the files dockerd.sh made. */
export function remoteHostConfig(e: RemoteEngine, extra: Partial<ContainerHostConfig> = {}): ContainerHostConfig {
  return {
    id: e.name,
    host: e.host,
    port: e.port,
    ca: e.ca,
    cert: e.cert,
    key: e.key,
    sshHost: e.sshHost,
    platforms: ['linux/arm/v7'],
    ...extra,
  };
}

/** The armhf base image (images/container-armhf/build.sh: cached, a no-op when up to date). */
export function armhfImage(): ContainerImageSource {
  execFileSync('bash', [join(REPO, 'images/container-armhf/build.sh')], { stdio: ['ignore', 'ignore', 'pipe'], timeout: 600_000 });
  return loadBuiltImage();
}

export interface KeyPair {
  privateKey: string;
  publicKey: string;
}

export function sshKeyPair(comment = 'dozen-test'): KeyPair {
  const dir = mkdtempSync(join(tmpdir(), 'dozen-ssh-'));
  const privateKey = join(dir, 'id_ed25519');
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', privateKey]);
  return { privateKey, publicKey: readFileSync(`${privateKey}.pub`, 'utf8').trim() };
}

export interface SshResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** `ssh -i key -p port root@host cmd`, non-interactive, bounded by timeoutMs. */
export function ssh(key: string, host: string, port: number, cmd: string, timeoutMs = 20_000): Promise<SshResult> {
  const args = [
    '-i', key, '-p', String(port),
    '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'BatchMode=yes',
    '-o', 'IdentitiesOnly=yes', '-o', 'ConnectTimeout=5', '-o', 'LogLevel=ERROR',
    `root@${host}`, cmd,
  ];
  return new Promise((res) => {
    execFile('ssh', args, { timeout: timeoutMs, encoding: 'utf8' }, (err, stdout, stderr) => {
      const code = err ? ((err as { code?: number | string }).code ?? null) : 0;
      res({ code: typeof code === 'number' ? code : null, stdout, stderr });
    });
  });
}

/** Retries ssh until it succeeds (the container's init needs a moment) or the deadline passes. */
export async function waitForSsh(key: string, host: string, port: number, cmd: string, timeoutMs = 30_000): Promise<SshResult> {
  const deadline = Date.now() + timeoutMs;
  let last: SshResult = { code: null, stdout: '', stderr: 'never tried' };
  while (Date.now() < deadline) {
    last = await ssh(key, host, port, cmd, Math.max(1_000, deadline - Date.now()));
    if (last.code === 0) return last;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`ssh root@${host}:${port} '${cmd}' never succeeded within ${timeoutMs} ms; last: code ${last.code}, ${last.stderr.trim()}`);
}

/** A short random suffix for tenant and lease ids, so runs and files never collide. */
export function uniq(): string {
  return randomBytes(3).toString('hex');
}

/**
 * Our TFTP server against the real clients installed on the host. Which client speaks what
 * (checked by capturing their RRQs and in their docs):
 *   tftp-hpa 5.2 `tftp`   RFC 1350 only: sends no options at all (no blksize/tsize/windowsize;
 *                         its only knobs are mode, rexmt and total timeout). Exits 0 even on
 *                         errors — it prints "Error code N: ..." and leaves an empty file.
 *   busybox 1.35 `tftp`   tsize always ("tsize 0"), blksize with -b N; no windowsize.
 *   curl 7.88 tftp://     tsize, blksize (512 unless --tftp-blksize) and timeout always, none
 *                         with --tftp-no-options; no windowsize.
 * No installed client does RFC 7440 windowsize: test/helpers/tftp-test-client.ts covers it.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fsHandler } from '../../src/boot/tftp/fs-handler.js';
import { TftpServer, type TransferEvent } from '../../src/boot/tftp/server.js';
import { makeTree, TFTP_ENGINE } from '../helpers/tftp-test-client.js';
import { requireTools } from '../helpers/tools.js';

const SIZES = {
  empty: 0,
  s511: 511,
  s512: 512, // exact multiple of the default block: needs an empty final DATA
  m1468: 1468 * 7, // exact multiple of the Ethernet-sized block
  f5m: 5 * 1024 * 1024 + 123,
  big: 65535 * 512 + 1_000_000, // > 65535 blocks of 512: block numbers roll over to 0
};
type Name = keyof typeof SIZES;

interface Run {
  code: number;
  out: string;
}
function run(cmd: string, args: string[], timeout = 60_000): Promise<Run> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout, maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      resolve({ code, out: `${stdout}${stderr}` });
    });
  });
}

let files: Map<string, Buffer>;
let root: string;
let outDir: string;
let server: TftpServer;
let port: number;
const events: TransferEvent[] = [];
let transferEnded = (): void => {};

beforeAll(async () => {
  requireTools('tftp', 'curl', 'busybox');
  const t = await makeTree(SIZES);
  files = t.files;
  root = t.dir;
  outDir = await mkdtemp(join(tmpdir(), 'tftp-out-'));
  await writeFile(join(outDir, 'secret'), 'outside the root');
  await symlink('/etc/passwd', join(root, 'passwd-link'));
  await symlink('/etc', join(root, 'etc-link'));
  await symlink(join(outDir, 'secret'), join(root, 'secret-link'));
  await symlink('s511', join(root, 'inside-link')); // stays inside: allowed
  server = new TftpServer({
    address: '127.0.0.1',
    port: 0,
    handler: fsHandler(root),
    engine: TFTP_ENGINE,
    onTransfer: (e) => {
      events.push(e);
      transferEnded();
    },
  });
  await server.start();
  port = server.address().port;
});

afterAll(async () => {
  await server?.stop();
  if (root) await rm(root, { recursive: true, force: true });
  if (outDir) await rm(outDir, { recursive: true, force: true });
});

/** Resolves once no transfer is active (checked as each one ends), or fails after a generous timeout. */
function idle(ms = 30_000): Promise<void> {
  if (server.stats.active === 0) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${server.stats.active} transfer(s) still active after ${ms / 1000} s`)), ms);
    transferEnded = () => {
      if (server.stats.active > 0) return;
      clearTimeout(t);
      resolve();
    };
  });
}

let n = 0;
const outFile = () => join(outDir, `out-${n++}`);

async function expectSame(file: string, name: Name | 's511'): Promise<void> {
  const got = await readFile(file);
  const want = files.get(name)!;
  expect(got.length).toBe(want.length);
  expect(got.equals(want)).toBe(true);
  await rm(file);
}

const hpa = (remote: string, local: string) => run('tftp', ['-m', 'binary', '127.0.0.1', String(port), '-c', 'get', remote, local]);
const curl = (remote: string, local: string, ...opts: string[]) =>
  run('curl', ['-sS', '--max-time', '60', ...opts, '-o', local, `tftp://127.0.0.1:${port}/${remote}`]);
const busybox = (remote: string, local: string, ...opts: string[]) =>
  run('busybox', ['tftp', '-g', '-r', remote, '-l', local, ...opts, '127.0.0.1', String(port)]);

const ALL = Object.keys(SIZES) as Name[];

describe('tftp-hpa client (RFC 1350, no options)', () => {
  it.each(ALL)('fetches %s byte-identical', async (name) => {
    const o = outFile();
    const r = await hpa(name, o);
    expect(r.out).not.toMatch(/Error|timed out/i);
    await expectSame(o, name);
  });
});

describe('curl', () => {
  it.each(ALL)('fetches %s with its default options (tsize, blksize 512, timeout)', async (name) => {
    const o = outFile();
    const r = await curl(name, o);
    expect(r).toEqual({ code: 0, out: '' });
    await expectSame(o, name);
  });
  it.each(['empty', 's512', 'm1468', 'f5m'] as Name[])('fetches %s with --tftp-blksize 1468', async (name) => {
    const o = outFile();
    expect((await curl(name, o, '--tftp-blksize', '1468')).code).toBe(0);
    await expectSame(o, name);
    await idle(); // the client exits right after its final ACK: let the server hear it
    expect(events.at(-1)).toMatchObject({ path: name, ok: true, blksize: 1468 });
  });
  it('fetches with the largest blksize (65464) and with --tftp-no-options', async () => {
    let o = outFile();
    expect((await curl('f5m', o, '--tftp-blksize', '65464')).code).toBe(0);
    await expectSame(o, 'f5m');
    await idle(); // the client exits right after its final ACK: let the server hear it
    expect(events.at(-1)).toMatchObject({ path: 'f5m', ok: true, blksize: 65464 });
    o = outFile();
    expect((await curl('m1468', o, '--tftp-no-options')).code).toBe(0);
    await expectSame(o, 'm1468');
    await idle(); // the client exits right after its final ACK: let the server hear it
    expect(events.at(-1)).toMatchObject({ path: 'm1468', ok: true, blksize: 512 });
  });
});

describe('busybox tftp', () => {
  it.each(ALL)('fetches %s (tsize)', async (name) => {
    const o = outFile();
    const r = await busybox(name, o);
    expect(r.code, r.out).toBe(0);
    await expectSame(o, name);
  });
  it.each(['empty', 'm1468', 'f5m'] as Name[])('fetches %s with -b 1468', async (name) => {
    const o = outFile();
    expect((await busybox(name, o, '-b', '1468')).code).toBe(0);
    await expectSame(o, name);
    await idle(); // the client exits right after its final ACK: let the server hear it
    expect(events.at(-1)).toMatchObject({ path: name, ok: true, blksize: 1468 });
  });
});

describe('path safety with real clients', () => {
  const absent = async (f: string) => {
    const s = await stat(f).catch(() => null);
    expect(s === null || s.size === 0).toBe(true); // tftp-hpa creates the local file before asking
  };

  it.each(['../etc/passwd', '/etc/passwd', 'passwd-link', 'etc-link/passwd', 'secret-link', 'm1468/../../x'])(
    'tftp-hpa gets ERROR 2 for %s',
    async (path) => {
      const o = outFile();
      const r = await hpa(path, o);
      expect(r.out).toMatch(/Error code 2/);
      await absent(o);
    },
  );

  it('curl and busybox get access violations too', async () => {
    let o = outFile();
    // curl normalises "../" away unless told not to; 69 = CURLE_TFTP_PERM
    expect((await curl('../etc/passwd', o, '--path-as-is')).code).toBe(69);
    expect((await curl('/etc/passwd', o)).code).toBe(69);
    expect((await curl('passwd-link', o)).code).toBe(69);
    await absent(o);
    o = outFile();
    const r = await busybox('../etc/passwd', o);
    expect(r.code).not.toBe(0);
    expect(r.out).toMatch(/\(2\)/);
    await absent(o);
  });

  it('serves a symlink that stays inside the root, and says "not found" for missing files', async () => {
    const o = outFile();
    await hpa('inside-link', o);
    await expectSame(o, 's511');
    const missing = outFile();
    expect((await hpa('nope', missing)).out).toMatch(/Error code 1/);
    expect((await curl('nope', missing)).code).toBe(68); // CURLE_TFTP_NOTFOUND
  });

  it('counted every transfer and left nothing active', async () => {
    await idle();
    expect(server.stats.active).toBe(0);
    expect(server.stats.completed).toBeGreaterThan(20);
    expect(events.filter((e) => !e.ok).every((e) => /Access violation|File not found/.test(e.error ?? ''))).toBe(true);
  });
});

/**
 * TgtIpc against a real tgtd of our own: accounts made over tgtd's management socket are the ones
 * tgtadm shows, errors read like tgtadm's, the secret works for a CHAP login, and no process on the
 * machine ever carries the secret in its argv.
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TgtDaemon } from '../../src/storage/tgt-daemon.js';
import { TgtIpc, TgtIpcError } from '../../src/storage/tgt-ipc.js';
import { requireRoot, requireTools } from '../helpers/tools.js';
import { AUTH_FAILURE, freePort, iscsiInq } from './tgt-fixture.js';

const IQN = 'iqn.2026-11.cloud.dozen:ipc-test';
const INITIATOR = 'iqn.2026-11.cloud.dozen:ipc-board';
/** The claims directory test/storage/tgt-fixture.ts uses, so parallel test files never share a port. */
const CLAIMS = join(tmpdir(), 'dozen-tgtd-control-ports');

let daemon: TgtDaemon;
let ipc: TgtIpc;
let port: number;
let portal: string;
let work: string;
let claim: string | undefined;
let started = false;

const socketOf = (p: number) => `/var/run/tgtd/socket.${p}`;

/** A control port in 31000-31999 with no tgtd socket and no other test's claim (exclusive create). */
function claimControlPort(): number {
  mkdirSync(CLAIMS, { recursive: true });
  for (let p = 31_000; p < 32_000; p++) {
    if (existsSync(socketOf(p)) || existsSync(`${socketOf(p)}.lock`)) continue;
    try {
      closeSync(openSync(join(CLAIMS, String(p)), 'wx'));
      claim = join(CLAIMS, String(p));
      return p;
    } catch {
      /* another test process has it */
    }
  }
  throw new Error(`no free tgtd control port in 31000-31999 (claims in ${CLAIMS})`);
}

/** tgtadm for the non-secret set-up and for checking what tgtd holds; throws with its stderr. */
function tgtadm(...args: string[]): string {
  const r = spawnSync('tgtadm', ['-C', String(port), '--lld', 'iscsi', ...args], { encoding: 'utf8', timeout: 15_000 });
  if (r.status !== 0) throw new Error(`tgtadm ${args.join(' ')}: ${r.stderr || r.error?.message}`);
  return r.stdout;
}

/** The "Account information" lines of one target in `tgtadm --op show --mode target`. */
function targetAccounts(tid: number): string[] {
  const section = tgtadm('--op', 'show', '--mode', 'target').split(/^Target /m).find((s) => s.startsWith(`${tid}: `)) ?? '';
  return (/^ {4}Account information:\n((?: {8}.*\n)*)/m.exec(section)?.[1] ?? '').split('\n').map((l) => l.trim()).filter(Boolean);
}

/**
 * Watches every process's argv (/proc/<pid>/cmdline) for `needle` from a worker thread, so the scans
 * go on even while the test's own thread is blocked (a synchronous spawn would hide from an
 * in-thread scan). The needle reaches the worker as workerData, never through an argv.
 */
function watchArgv(needle: string): { ready: Promise<unknown>; stop: () => Promise<{ hits: string[]; scans: number }> } {
  const flag = new Int32Array(new SharedArrayBuffer(4));
  const worker = new Worker(
    `const { workerData: { needle, flag }, parentPort } = require('node:worker_threads');
     const fs = require('node:fs');
     const hits = new Set();
     let scans = 0;
     while (Atomics.load(flag, 0) === 0) {
       for (const pid of fs.readdirSync('/proc')) {
         if (!/^[0-9]+$/.test(pid)) continue;
         let cmd;
         try { cmd = fs.readFileSync('/proc/' + pid + '/cmdline'); } catch { continue; }
         if (cmd.includes(needle)) hits.add(pid + ': ' + cmd.toString().split('\0').join(' '));
       }
       if (++scans === 1) parentPort.postMessage('ready');
     }
     parentPort.postMessage({ hits: [...hits], scans });`,
    { eval: true, workerData: { needle, flag } },
  );
  let ready!: (v: unknown) => void;
  const result = new Promise<{ hits: string[]; scans: number }>((res, rej) => {
    worker.on('message', (m) => (m === 'ready' ? ready(m) : res(m)));
    worker.once('error', rej);
  });
  return {
    // After the first full scan: a watch that has not started yet would see nothing.
    ready: Promise.race([new Promise((r) => (ready = r)), result]),
    stop: async () => {
      Atomics.store(flag, 0, 1);
      return result;
    },
  };
}

/** A secret unique to this run, with the separators tgtd's parameter string uses. */
const secret = (tag: string) => `${tag}=Se,cr${randomBytes(6).toString('hex')}`;

beforeAll(async () => {
  requireRoot();
  requireTools('tgtd', 'tgtadm', 'iscsi-inq', 'truncate');
  work = mkdtempSync(join(tmpdir(), 'tgt-ipc-'));
  port = claimControlPort();
  const portalPort = await freePort('127.0.0.1');
  portal = `127.0.0.1:${portalPort}`;
  daemon = new TgtDaemon({ controlPort: port, portalIp: '127.0.0.1', portalPort, logFile: join(work, 'tgtd.log') });
  await daemon.start();
  started = true;
  ipc = new TgtIpc(port);
  // Target 1 with a LUN and an ACL for the CHAP login; target 2 for the outgoing account.
  const disk = join(work, 'disk.img');
  spawnSync('truncate', ['-s', '16M', disk]);
  tgtadm('--op', 'new', '--mode', 'target', '--tid', '1', '--targetname', IQN);
  tgtadm('--op', 'new', '--mode', 'logicalunit', '--tid', '1', '--lun', '1', '--backing-store', disk);
  tgtadm('--op', 'bind', '--mode', 'target', '--tid', '1', '--initiator-name', INITIATOR);
  tgtadm('--op', 'new', '--mode', 'target', '--tid', '2', '--targetname', `${IQN}-2`);
});

afterAll(async () => {
  // stop() deletes the targets first: tgtd ignores SIGTERM while it has any.
  await daemon?.stop();
  // tgtd leaves its socket and lock files behind: remove ours once it is gone (never another tgtd's).
  if (started && !daemon.pid) {
    rmSync(socketOf(port), { force: true });
    rmSync(`${socketOf(port)}.lock`, { force: true });
  }
  if (claim) rmSync(claim, { force: true });
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('TgtIpc: tgtd management over its unix socket', () => {
  const incoming = { user: 'ipc-in', secret: secret('in') };

  it('creates an account that tgtadm lists, binds it, and its secret works for a CHAP login', async () => {
    await ipc.newAccount(incoming.user, incoming.secret);
    expect(tgtadm('--op', 'show', '--mode', 'account').split('\n').map((l) => l.trim())).toContain(incoming.user);
    await ipc.bindAccount(1, incoming.user);
    expect(targetAccounts(1)).toEqual([incoming.user]);
    // The secret arrived byte for byte (',' and '=' included): libiscsi logs in with it, not without it.
    // (iscsi-inq takes it in its URL, i.e. its argv: that is the initiator's side, and not the secret
    // the argv test below watches.)
    const ok = iscsiInq(portal, IQN, INITIATOR, { user: incoming.user, secret: incoming.secret });
    expect(ok.ok, ok.out).toBe(true);
    const bad = iscsiInq(portal, IQN, INITIATOR, { user: incoming.user, secret: `${incoming.secret}x` });
    expect(bad.out).toContain(AUTH_FAILURE);
  });

  it('binds an outgoing account: tgtadm shows the (outgoing) flag; a second one is refused', async () => {
    await ipc.newAccount('ipc-out', secret('out'));
    await ipc.bindAccount(2, 'ipc-out', { outgoing: true });
    expect(targetAccounts(2)).toEqual(['ipc-out (outgoing)']);
    await ipc.newAccount('ipc-out2', secret('out2'));
    await expect(ipc.bindAccount(2, 'ipc-out2', { outgoing: true })).rejects.toThrow(/this target already has an outgoing account/);
  });

  it('reports errors in tgtadm’s words: duplicate account, unknown account, unknown target', async () => {
    const dup = ipc.newAccount(incoming.user, 'whatever-secret');
    await expect(dup).rejects.toBeInstanceOf(TgtIpcError);
    await expect(dup).rejects.toMatchObject({ tgtCode: 14, message: expect.stringMatching(/account new ipc-in: this account already exists$/) });
    expect(await ipc.request({ mode: 'account', op: 'new', params: { user: incoming.user, password: 'x' } })).toEqual({ code: 14, text: 'this account already exists' });
    await expect(ipc.bindAccount(1, 'nobody')).rejects.toThrow(/can't find the account/);
    await expect(ipc.bindAccount(99, incoming.user)).rejects.toThrow(/can't find the target/);
    // The secret never appears in an error.
    const err = await ipc.newAccount(incoming.user, incoming.secret).catch((e: Error) => e);
    expect(String(err)).toMatch(/this account already exists/);
    expect(String(err)).not.toContain(incoming.secret);
  });

  it('fails clearly when no tgtd listens on the control port', async () => {
    let bad = 31_000;
    while (existsSync(socketOf(bad))) bad++;
    await expect(new TgtIpc(bad).newAccount('u', 's')).rejects.toThrow(
      new RegExp(`tgtd \\(control port ${bad}\\) account new: can't connect to tgtd at /var/run/tgtd/socket\\.${bad} \\(ENOENT\\): is a tgtd running with -C ${bad}\\?`),
    );
  });

  it('no process on the machine has the secret in its argv while 20 accounts are made with it', async () => {
    // Control: the watcher does see a secret in a live process's argv.
    const canary = `canary-${randomBytes(8).toString('hex')}`;
    const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 30000)', canary], { stdio: 'ignore' });
    try {
      await new Promise((r) => child.once('spawn', r));
      const control = watchArgv(canary);
      await control.ready;
      expect((await control.stop()).hits.join('\n')).toContain(canary);
    } finally {
      child.kill('SIGKILL');
    }

    const pw = secret('argv');
    const users = Array.from({ length: 20 }, (_, i) => `ipc-argv-${i}`);
    const watch = watchArgv(pw);
    await watch.ready;
    let seen: { hits: string[]; scans: number };
    try {
      for (const u of users) await ipc.newAccount(u, pw);
    } finally {
      seen = await watch.stop();
    }
    expect(seen.hits).toEqual([]);
    expect(seen.scans).toBeGreaterThan(1); // the first before the requests, at least one overlapping them
    const listed = tgtadm('--op', 'show', '--mode', 'account');
    for (const u of users) expect(listed).toContain(`    ${u}\n`);
    for (const u of users) expect(await ipc.request({ mode: 'account', op: 'delete', params: { user: u } })).toEqual({ code: 0, text: '' });
  });
});

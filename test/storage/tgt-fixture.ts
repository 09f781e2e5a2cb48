import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, openSync, closeSync, statSync, unlinkSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TgtDaemon } from '../../src/storage/tgt-daemon.js';
import { TgtExporter } from '../../src/storage/tgt-exporter.js';

/** A free TCP port on the address (bound and released). */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, host, () => {
      const a = s.address();
      s.close(() => (a && typeof a === 'object' ? res(a.port) : rej(new Error('no port'))));
    });
  });
}

/** Claims of control ports by test processes that run at the same time (one file per port). */
const CLAIMS = join(tmpdir(), 'dozen-tgtd-control-ports');
/** A claim older than this belongs to a run that is over. */
const CLAIM_TTL_MS = 6 * 3600_000;

/**
 * A control port no tgtd holds (its socket is /var/run/tgtd/socket.<port>) and no other test process
 * has claimed: ports are taken in order and claimed with an exclusive create, so two test files
 * started together never get the same one.
 */
export function freeControlPort(): number {
  mkdirSync(CLAIMS, { recursive: true });
  for (let p = 20_000; p < 30_000; p++) {
    if (existsSync(`/var/run/tgtd/socket.${p}`) || existsSync(`/var/run/tgtd/socket.${p}.lock`)) continue;
    const claim = join(CLAIMS, String(p));
    try {
      if (Date.now() - statSync(claim).mtimeMs > CLAIM_TTL_MS) unlinkSync(claim);
    } catch {
      /* no claim yet */
    }
    try {
      closeSync(openSync(claim, 'wx'));
      return p;
    } catch {
      /* claimed by another test process: the next one */
    }
  }
  throw new Error(`no free tgtd control port in 20000-29999 (claims in ${CLAIMS})`);
}

/** Our own tgtd on a loopback portal, as tests use it. */
export async function startTestTgt(portalIp = '127.0.0.1'): Promise<{ daemon: TgtDaemon; exporter: TgtExporter; portal: string }> {
  const daemon = new TgtDaemon({ controlPort: freeControlPort(), portalIp, portalPort: await freePort(portalIp) });
  await daemon.start();
  const exporter = new TgtExporter(daemon.adm, daemon.portal);
  return { daemon, exporter, portal: `${daemon.portal.ip}:${daemon.portal.port}` };
}

export interface IscsiResult {
  ok: boolean;
  /** The exit status (libiscsi's tools exit 10 when a login fails); null when killed. */
  code: number | null;
  out: string;
}

/** libiscsi's iscsi-ls (discovery + LUN list) as initiator `iname`, with optional CHAP. */
export function iscsiLs(portal: string, iname: string, chap?: { user: string; secret: string }): IscsiResult {
  const auth = chap ? `${chap.user}%${chap.secret}@` : '';
  const r = spawnSync('iscsi-ls', ['-s', '-i', iname, `iscsi://${auth}${portal}`], { encoding: 'utf8', timeout: 30_000 });
  return { ok: r.status === 0, code: r.status, out: `${r.stdout}${r.stderr}` };
}

/**
 * libiscsi's iscsi-inq: a full login to the target's LUN 1 and a SCSI INQUIRY. With `target`, the
 * initiator asks for mutual CHAP and checks the target's answer against that account.
 */
export function iscsiInq(portal: string, iqn: string, iname: string, chap?: { user: string; secret: string }, target?: { user: string; secret: string }): IscsiResult {
  const auth = chap ? `${chap.user}%${chap.secret}@` : '';
  const env = target ? { ...process.env, LIBISCSI_CHAP_TARGET_USERNAME: target.user, LIBISCSI_CHAP_TARGET_PASSWORD: target.secret } : process.env;
  const r = spawnSync('iscsi-inq', ['-i', iname, `iscsi://${auth}${portal}/${iqn}/1`], { encoding: 'utf8', timeout: 30_000, env });
  return { ok: r.status === 0, code: r.status, out: `${r.stdout}${r.stderr}` };
}

/** iscsi-inq's refusal of a login to a target whose ACL does not list the initiator name. */
export const TARGET_NOT_FOUND = 'Login Failed. Failed to log in to target. Status: Target not found(515)';
/** iscsi-inq's refusal of a login with no, or the wrong, CHAP account. */
export const AUTH_FAILURE = 'Login Failed. Failed to log in to target. Status: Authentication failure(513)';

/**
 * Waits until tgtd's supervisor has restarted it `after` restarts (and its onRestart hooks re-created
 * the targets); returns how long that took. Throws, naming what it saw, after `timeoutMs`.
 */
export async function restarted(daemon: TgtDaemon, after: number, timeoutMs = 60_000): Promise<number> {
  const t0 = Date.now();
  while (daemon.restarts.length <= after) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`tgtd was not restarted within ${timeoutMs / 1000} s (pid ${daemon.pid}, ${daemon.restarts.length} restarts)`);
    await new Promise((r) => setTimeout(r, 20));
  }
  await daemon.settled();
  return Date.now() - t0;
}

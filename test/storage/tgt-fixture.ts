import { spawnSync } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
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

/** A control port no tgtd holds (its lock file is /var/run/tgtd/socket.<port>.lock). */
export function freeControlPort(): number {
  for (let i = 0; i < 100; i++) {
    const p = randomInt(20_000, 30_000);
    if (!existsSync(`/var/run/tgtd/socket.${p}`)) return p;
  }
  throw new Error('no free tgtd control port');
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
  out: string;
}

/** libiscsi's iscsi-ls (discovery + LUN list) as initiator `iname`, with optional CHAP. */
export function iscsiLs(portal: string, iname: string, chap?: { user: string; secret: string }): IscsiResult {
  const auth = chap ? `${chap.user}%${chap.secret}@` : '';
  const r = spawnSync('iscsi-ls', ['-s', '-i', iname, `iscsi://${auth}${portal}`], { encoding: 'utf8', timeout: 30_000 });
  return { ok: r.status === 0, out: `${r.stdout}${r.stderr}` };
}

/** libiscsi's iscsi-inq: a full login to the target's LUN 1 and a SCSI INQUIRY. */
export function iscsiInq(portal: string, iqn: string, iname: string, chap?: { user: string; secret: string }): IscsiResult {
  const auth = chap ? `${chap.user}%${chap.secret}@` : '';
  const r = spawnSync('iscsi-inq', ['-i', iname, `iscsi://${auth}${portal}/${iqn}/1`], { encoding: 'utf8', timeout: 30_000 });
  return { ok: r.status === 0, out: `${r.stdout}${r.stderr}` };
}

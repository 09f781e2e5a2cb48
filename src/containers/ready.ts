import { connect } from 'node:net';
import { OutputWatcher } from '../util/wait-for.js';
import type { ContainerConsole } from './console.js';

/** What the armhf base image prints on its console once it is up (images/container-armhf/rootfs/etc/dozen/rcS). */
export const READY_MARKER = 'DOZEN-CONTAINER READY';

/** Reads the first line an SSH server sends ("SSH-2.0-dropbear_2022.83"), or rejects. */
function sshBanner(host: string, port: number, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = connect({ host, port });
    let buf = '';
    const done = (err: Error | null, line?: string) => {
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve(line!);
    };
    const timer = setTimeout(() => done(new Error(`no SSH banner within ${timeoutMs} ms`)), timeoutMs);
    sock.on('data', (b: Buffer) => {
      buf += b.toString('latin1');
      const nl = buf.indexOf('\n');
      if (nl >= 0) done(null, buf.slice(0, nl).trim());
    });
    sock.on('error', (err) => done(err));
    sock.on('close', () => done(new Error(`connection closed before an SSH banner (got ${JSON.stringify(buf)})`)));
  });
}

/**
 * Resolves once the lease's SSH server greets on sshHost:sshPort — the same path a tenant takes —
 * polling until the deadline; the error says what was awaited and the last failure.
 */
export async function waitForSshBanner(what: string, host: string, port: number, timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let last = 'never tried';
  while (Date.now() < deadline) {
    try {
      const line = await sshBanner(host, port, Math.min(3_000, Math.max(200, deadline - Date.now())));
      if (line.startsWith('SSH-')) return line;
      last = `not an SSH banner: ${JSON.stringify(line)}`;
    } catch (err) {
      last = (err as Error).message;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`no SSH server on ${host}:${port} after ${timeoutMs / 1000} s for ${what}; last: ${last}`);
}

/** Resolves once the console (attached with its scrollback) has printed `marker`. */
export async function waitForConsoleMarker(what: string, con: ContainerConsole, timeoutMs: number, marker = READY_MARKER): Promise<void> {
  const out = new OutputWatcher(con);
  try {
    await out.waitFor(marker, timeoutMs, `the console of ${what}`);
  } finally {
    con.destroy();
  }
}

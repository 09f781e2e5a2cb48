/**
 * Runs a shell script on a shared board itself, not in a tenant's container: a short-lived privileged
 * helper container that enters the board's namespaces (nsenter into PID 1) and runs the board's own
 * tools (iscsiadm, mkfs.ext4, mount). The controller reaches the board only through its engine's API
 * (mutual TLS), so this needs no agent on the board and no other open port.
 */
import type Docker from 'dockerode';
import type { ContainerHost } from '../containers/host.js';

export const HELPER_LABEL = 'dozen.helper';

export interface HelperResult {
  code: number;
  output: string;
}

/**
 * `script` runs under the board's /bin/sh with `env` (secrets go there, not in the command line: the
 * board's `ps` shows command lines); its output comes back with its exit code. The helper container is
 * removed whatever happens. `image` must be on the board and have `nsenter`.
 */
export async function runOnBoard(host: ContainerHost, image: string, what: string, script: string, env: Record<string, string>, timeoutMs = 120_000): Promise<HelperResult> {
  const body: Docker.ContainerCreateOptions = {
    Image: image,
    Entrypoint: ['nsenter', '-t', '1', '-m', '-u', '-i', '-n', '--', '/bin/sh', '-c', script],
    Cmd: [],
    Env: Object.entries(env).map(([k, v]) => `${k}=${v}`),
    Tty: true, // one plain output stream
    Labels: { [HELPER_LABEL]: what },
    HostConfig: { Privileged: true, PidMode: 'host', NetworkMode: 'host', UsernsMode: 'host', LogConfig: { Type: 'json-file', Config: {} } },
  };
  const c = await host.call(`create the helper for ${what}`, (d) => d.createContainer(body));
  try {
    await host.call(`start the helper for ${what}`, () => c.start());
    const timer = new Promise<never>((_, rej) => setTimeout(() => rej(new Error(`${what} on ${host.id}: no end after ${Math.round(timeoutMs / 1000)} s`)), timeoutMs).unref());
    const waited = (await Promise.race([host.streams.getContainer(c.id).wait(), timer])) as { StatusCode: number };
    const logs = await host.call(`read the helper's output for ${what}`, () => c.logs({ stdout: true, stderr: true, follow: false }));
    return { code: waited.StatusCode, output: (Buffer.isBuffer(logs) ? logs.toString('utf8') : String(logs)).trim() };
  } finally {
    await host.call(`remove the helper for ${what}`, () => c.remove({ force: true })).catch(() => {});
  }
}

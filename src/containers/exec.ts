import { PassThrough } from 'node:stream';
import { usableHost, type DriverContext } from './context.js';

export interface ExecResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** Runs a command in the lease's container and collects its output (operator checks, tests). No lock. */
export async function execInLease(ctx: DriverContext, leaseId: string, argv: string[], opts: { timeoutMs?: number }): Promise<ExecResult> {
  const lease = await ctx.index.locate(leaseId);
  const host = usableHost(ctx.pool, lease.hostId);
  const timeoutMs = opts.timeoutMs ?? 60_000;
  return host.call(`run ${argv[0]} in lease ${leaseId}`, async () => {
    const exec = await host.streams.getContainer(lease.containerId).exec({ Cmd: argv, AttachStdout: true, AttachStderr: true, Tty: false });
    const stream = (await exec.start({ hijack: true, stdin: false })) as NodeJS.ReadableStream & { destroy(): void };
    const out = new PassThrough();
    const err = new PassThrough();
    const chunks = { out: [] as Buffer[], err: [] as Buffer[] };
    out.on('data', (b: Buffer) => chunks.out.push(b));
    err.on('data', (b: Buffer) => chunks.err.push(b));
    host.streams.modem.demuxStream(stream, out, err);
    let timer: NodeJS.Timeout | undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        timer = setTimeout(() => {
          stream.destroy();
          reject(new Error(`${argv.join(' ')} in lease ${leaseId} did not finish within ${timeoutMs} ms`));
        }, timeoutMs);
        stream.on('end', () => resolve());
        stream.on('close', () => resolve());
        stream.on('error', reject);
      });
    } finally {
      clearTimeout(timer);
    }
    const info = await exec.inspect();
    return { exitCode: info.ExitCode ?? -1, stdout: Buffer.concat(chunks.out).toString(), stderr: Buffer.concat(chunks.err).toString() };
  });
}

import { execFile } from 'node:child_process';

export interface RunError extends Error {
  code?: number | string;
  stderr: string;
  stdout: string;
}

/**
 * Runs a storage tool (`btrfs`, `cp`, `tgtadm`, `e2fsck`...) with an argv array — never a shell —
 * and a timeout. On failure the error message carries the command and its stderr, and the error
 * keeps `code` (exit status) and `stderr` so callers can map e.g. "No space left" to a clear error.
 */
export function run(cmd: string, args: string[], opts: { timeoutMs?: number; okCodes?: number[] } = {}): Promise<{ stdout: string; stderr: string; code: number }> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: opts.timeoutMs ?? 60_000, maxBuffer: 16 * 1024 * 1024, encoding: 'utf8' }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      if (!err || (typeof err.code === 'number' && opts.okCodes?.includes(err.code))) return resolve({ stdout, stderr, code });
      const detail = (stderr || stdout || err.message).trim().split('\n').slice(-6).join(' | ');
      const e = new Error(`${cmd} ${maskSecrets(args).join(' ')}: ${err.killed ? 'timed out' : detail}`, { cause: err }) as RunError;
      e.code = err.code ?? undefined;
      e.stderr = stderr;
      e.stdout = stdout;
      reject(e);
    });
  });
}

/** Arguments as they may appear in an error or a log: the value after a secret-bearing flag is masked. */
export function maskSecrets(args: string[]): string[] {
  return args.map((a, i) => (i > 0 && /^--?(password|secret|community)$/i.test(args[i - 1]!) ? '(hidden)' : a));
}

/** True when the failure (an errno error or a tool's stderr) says the filesystem or a quota is full. */
export function isNoSpace(err: unknown): boolean {
  const e = err as { code?: unknown; stderr?: string; message?: string };
  if (e?.code === 'ENOSPC' || e?.code === 'EDQUOT') return true;
  return /No space left on device|Disk quota exceeded/i.test(`${e?.stderr ?? ''} ${e?.message ?? ''}`);
}

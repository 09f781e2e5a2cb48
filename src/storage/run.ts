import { runCommand } from '../exec/spawner.js';

export interface RunError extends Error {
  code?: number | string;
  stderr: string;
  stdout: string;
}

/**
 * Runs a storage tool (`btrfs`, `cp`, `tgtadm`, `e2fsck`...) with an argv array — never a shell —
 * and a timeout, through the command helper (src/exec/spawner.ts: a disk clone or an export in a lease
 * burst never stalls the API). On failure the error message carries the command and its stderr, and
 * the error keeps `code` (exit status, or the errno of a tool that could not start) and `stderr` so
 * callers can map e.g. "No space left" to a clear error.
 */
export async function run(cmd: string, args: string[], opts: { timeoutMs?: number; okCodes?: number[] } = {}): Promise<{ stdout: string; stderr: string; code: number }> {
  const r = await runCommand({ file: cmd, args, timeoutMs: opts.timeoutMs ?? 60_000, maxOutput: 16 * 1024 * 1024 });
  const code = r.error ? -1 : (r.code ?? -1);
  if (!r.error && !r.timedOut && (code === 0 || opts.okCodes?.includes(code))) return { stdout: r.stdout, stderr: r.stderr, code };
  const detail = (r.stderr || r.stdout || r.error || `killed by ${r.signal}`).trim().split('\n').slice(-6).join(' | ');
  const e = new Error(`${cmd} ${maskSecrets(args).join(' ')}: ${r.timedOut ? 'timed out' : detail}`) as RunError;
  e.code = r.error ? (/\b(E[A-Z]+)\b/.exec(r.error)?.[1] ?? -1) : code;
  e.stderr = r.stderr;
  e.stdout = r.stdout;
  throw e;
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

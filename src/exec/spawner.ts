/**
 * Short commands (power relays, and whatever else runs often while requests are served) run from a
 * small helper process, not from the server's. Starting a program from Node forks the calling process
 * and copies its page tables first, blocking its event loop meanwhile: 4.9 ms at 340 MB RSS and 12.5 ms
 * at 860 MB, measured here, per command; twenty power-ons in a lease burst held the API for ~150 ms.
 * The helper (src/exec/spawner-child.mjs, plain JavaScript: no loader, ~45 MB) pays that on its own.
 * It starts on first use, never holds the process open while idle, and is started again if it dies
 * (the commands it was running are then reported failed).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export interface CommandResult {
  /** Exit status, or null when a signal ended it (or it never started). */
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  /** The timeout ended it (its whole process group was killed). */
  timedOut: boolean;
  /** It could not be started, or the helper died under it. */
  error?: string;
}

export interface CommandRequest {
  file: string;
  args: string[];
  timeoutMs: number;
  /** Output kept of stdout and of stderr, each (default 1 MiB); more is dropped. */
  maxOutput?: number;
  /** Written to the command's stdin, then closed (without it, stdin is /dev/null). */
  input?: string;
}

const CHILD = fileURLToPath(new URL('./spawner-child.mjs', import.meta.url));

let helper: ChildProcess | undefined;
const pending = new Map<number, (r: CommandResult) => void>();
let nextId = 1;

function ensureHelper(): ChildProcess {
  if (helper?.connected) return helper;
  const h = fork(CHILD, [], { execArgv: [], stdio: ['ignore', 'ignore', 'inherit', 'ipc'], serialization: 'json' });
  h.on('message', (m: { id: number; code?: number | null; signal?: string | null; stdout: string; stderr: string; timedOut?: boolean; error?: string }) => {
    const done = pending.get(m.id);
    if (!done) return;
    pending.delete(m.id);
    hold();
    done({ code: m.code ?? null, signal: m.signal ?? null, stdout: m.stdout, stderr: m.stderr, timedOut: m.timedOut === true, ...(m.error ? { error: m.error } : {}) });
  });
  const gone = (why: string) => {
    if (helper === h) helper = undefined;
    for (const [id, done] of pending) {
      pending.delete(id);
      done({ code: null, signal: null, stdout: '', stderr: '', timedOut: false, error: why });
    }
  };
  h.on('exit', (code, sig) => gone(`the command helper exited (${code ?? sig})`));
  h.on('error', (err) => gone(`the command helper failed: ${err.message}`));
  h.unref();
  helper = h;
  hold();
  return h;
}

/** @internal The helper's pid, if it runs (tests kill it to check the restart). */
export function helperPid(): number | undefined {
  return helper?.connected ? helper.pid : undefined;
}

/** The helper keeps the process alive only while a command of ours runs. */
function hold(): void {
  const ch = helper?.channel as { ref(): void; unref(): void } | undefined;
  if (!ch) return;
  if (pending.size) ch.ref();
  else ch.unref();
}

/**
 * Runs `file` with `args` (no shell unless the caller asks for one) in a process group of its own.
 * An abort kills the group and resolves at once with `error: 'aborted'`.
 */
export function runCommand(req: CommandRequest, signal?: AbortSignal): Promise<CommandResult> {
  if (signal?.aborted) return Promise.resolve({ code: null, signal: null, stdout: '', stderr: '', timedOut: false, error: 'aborted' });
  const h = ensureHelper();
  const id = nextId++;
  return new Promise((resolve) => {
    const onAbort = () => {
      if (!pending.delete(id)) return;
      hold();
      if (h.connected) h.send({ kill: id });
      resolve({ code: null, signal: null, stdout: '', stderr: '', timedOut: false, error: 'aborted' });
    };
    pending.set(id, (r) => {
      signal?.removeEventListener('abort', onAbort);
      resolve(r);
    });
    signal?.addEventListener('abort', onAbort, { once: true });
    hold();
    h.send({ id, file: req.file, args: req.args, timeoutMs: req.timeoutMs, maxOutput: req.maxOutput ?? 1024 * 1024, ...(req.input !== undefined ? { input: req.input } : {}) });
  });
}

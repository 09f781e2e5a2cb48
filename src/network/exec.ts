import { spawn } from 'node:child_process';

/**
 * Runs a program (argv, never a shell) with optional stdin; resolves stdout, rejects with stderr. When
 * `netns` is given the program runs inside that namespace (`ip netns exec`).
 */
export function run(cmd: string, args: string[], opts: { input?: string; netns?: string; timeoutMs?: number } = {}): Promise<string> {
  const argv = opts.netns ? ['netns', 'exec', opts.netns, cmd, ...args] : args;
  const prog = opts.netns ? 'ip' : cmd;
  const timeout = opts.timeoutMs ?? 15_000;
  return new Promise((resolve, reject) => {
    const child = spawn(prog, argv, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeout);
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`${cmd}: ${err.message}`, { cause: err }));
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code === 0) return resolve(stdout);
      const why = timedOut ? `timed out after ${timeout} ms` : `exited with ${code}`;
      reject(new Error(`${cmd} ${args.slice(0, 3).join(' ')} ${why}: ${stderr.trim() || stdout.trim()}`));
    });
    child.stdin.on('error', () => {}); // a program that exits early closes its stdin: the exit status says why
    child.stdin.end(opts.input ?? '');
  });
}

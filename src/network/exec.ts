import { runCommand } from '../exec/spawner.js';

/**
 * Runs a program (argv, never a shell) with optional stdin; resolves stdout, rejects with stderr. When
 * `netns` is given the program runs inside that namespace (`ip netns exec`). Through the command helper
 * (src/exec/spawner.ts): a lease's port isolation and nftables rules are set while requests are served,
 * and a fork of the server would stall its event loop for each.
 */
export async function run(cmd: string, args: string[], opts: { input?: string; netns?: string; timeoutMs?: number } = {}): Promise<string> {
  const argv = opts.netns ? ['netns', 'exec', opts.netns, cmd, ...args] : args;
  const prog = opts.netns ? 'ip' : cmd;
  const timeout = opts.timeoutMs ?? 15_000;
  // stdin is always given (empty if none): tools like nft read it when told to, and never wait on a terminal.
  // A rack's bridge and nft listings (JSON) grow with its ports: keep all of it, well past the helper's 1 MiB default.
  const r = await runCommand({ file: prog, args: argv, timeoutMs: timeout, input: opts.input ?? '', maxOutput: 64 << 20 });
  if (r.error) throw new Error(`${cmd}: ${r.error}`);
  if (r.code === 0) return r.stdout;
  const why = r.timedOut ? `timed out after ${timeout} ms` : r.code === null ? `killed by ${r.signal}` : `exited with ${r.code}`;
  throw new Error(`${cmd} ${args.slice(0, 3).join(' ')} ${why}: ${r.stderr.trim() || r.stdout.trim()}`);
}

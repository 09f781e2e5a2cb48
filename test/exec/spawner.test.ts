/** The command helper (src/exec/spawner.ts): real commands, real process groups. */
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { helperPid, runCommand } from '../../src/exec/spawner.js';
import { until } from '../helpers/until.js';

const alive = (pattern: string) => {
  try {
    return execFileSync('pgrep', ['-f', pattern], { encoding: 'utf8' }).trim() !== '';
  } catch {
    return false; // pgrep: no match
  }
};

describe('runCommand', () => {
  it('returns the exit status and both outputs', async () => {
    const ok = await runCommand({ file: '/bin/sh', args: ['-c', 'echo out; echo err >&2'], timeoutMs: 5000 });
    expect(ok).toMatchObject({ code: 0, signal: null, stdout: 'out\n', stderr: 'err\n', timedOut: false });
    expect(ok.error).toBeUndefined();
    expect(await runCommand({ file: '/bin/sh', args: ['-c', 'exit 3'], timeoutMs: 5000 })).toMatchObject({ code: 3 });
    expect((await runCommand({ file: '/nonexistent/tool', args: [], timeoutMs: 5000 })).error).toMatch(/ENOENT/);
  });

  it('feeds stdin when given (nft -f - reads its rules there), and /dev/null otherwise', async () => {
    const big = 'x'.repeat(200_000) + '\n'; // more than a pipe holds: written while the command reads
    expect((await runCommand({ file: '/usr/bin/wc', args: ['-c'], timeoutMs: 5000, input: big })).stdout.trim()).toBe(String(big.length));
    expect(await runCommand({ file: '/bin/cat', args: [], timeoutMs: 5000 })).toMatchObject({ code: 0, stdout: '' });
    // A command that never reads its input still ends with its own status.
    expect(await runCommand({ file: '/bin/sh', args: ['-c', 'exit 4'], timeoutMs: 5000, input: big })).toMatchObject({ code: 4 });
  });

  // Unique sleep lengths name this run's processes for pgrep.
  const nap = (n: number) => `${300 + n}.${process.pid}`;

  it('a timeout kills the whole process group, at once', async () => {
    const t0 = Date.now();
    const r = await runCommand({ file: '/bin/sh', args: ['-c', `sleep ${nap(1)} & sleep ${nap(2)}; true`], timeoutMs: 500 });
    expect(r.timedOut).toBe(true);
    expect(Date.now() - t0).toBeLessThan(5000);
    await until('the group is gone (the background sleep too)', () => !alive(`sleep ${nap(1)}`) && !alive(`sleep ${nap(2)}`), { timeoutMs: 5000 });
  });

  it('an abort kills the group and answers at once', async () => {
    const ac = new AbortController();
    const p = runCommand({ file: '/bin/sh', args: ['-c', `sleep ${nap(3)}; true`], timeoutMs: 60_000 }, ac.signal);
    await until('the command runs', () => alive(`sleep ${nap(3)}`), { timeoutMs: 5000 });
    ac.abort();
    expect((await p).error).toBe('aborted');
    await until('the command is gone', () => !alive(`sleep ${nap(3)}`), { timeoutMs: 5000 });
  });

  it('runs commands side by side, and the helper comes back after it dies', async () => {
    const rs = await Promise.all(Array.from({ length: 20 }, (_, i) => runCommand({ file: '/bin/echo', args: [String(i)], timeoutMs: 5000 })));
    expect(rs.map((r) => r.stdout.trim())).toEqual(Array.from({ length: 20 }, (_, i) => String(i)));
    // Kill the helper while a command runs: that command is reported failed, the next one works.
    const running = runCommand({ file: '/bin/sh', args: ['-c', `sleep ${nap(4)}; true`], timeoutMs: 60_000 });
    await until('the command runs', () => alive(`sleep ${nap(4)}`), { timeoutMs: 5000 });
    process.kill(helperPid()!, 'SIGKILL'); // this process's helper only: other test files have their own
    expect((await running).error).toMatch(/command helper exited/);
    expect((await runCommand({ file: '/bin/echo', args: ['back'], timeoutMs: 5000 })).stdout).toBe('back\n');
    execFileSync('pkill', ['-KILL', '-f', `sleep ${nap(4)}`]); // its group outlived the helper's SIGKILL
  });
});

import { execFile } from 'node:child_process';
import { chmodSync, mkdtempSync, rmdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../../src/config.js';
import { labProblems, UBOOT_BIN } from '../../src/lab/preflight.js';
import { requireTools } from '../helpers/tools.js';

/** Runs `cmd args` as root; resolves with its exit code and output. */
function run(cmd: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) =>
    execFile(cmd, args, { timeout: 60_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number | string }).code as number) ?? null : 0, stdout, stderr }),
    ),
  );
}

describe('the lab refuses to start without what it needs, and says how to get it', () => {
  it('as a user without root, `dozen lab up` exits non-zero naming root', async () => {
    requireTools('runuser', 'unshare', 'mount');
    // `nobody` may not be able to reach the clone (a `mktemp -d` parent is 0700), so the clone is shown
    // to it at a path anyone can traverse: bound onto a 0755 folder under /tmp in a private mount
    // namespace that only this command sees. Its data dir lives there too.
    const top = mkdtempSync('/tmp/dozen-preflight-');
    const repo = join(top, 'repo');
    const data = join(top, 'data');
    try {
      chmodSync(top, 0o755);
      const script = [
        'set -e',
        'mkdir -p "$2" "$3"',
        'chmod 0777 "$3"',
        'mount --bind "$1" "$2"',
        'shift',
        'cd "$1"', // node resolves `--import tsx` from here
        // A control first: nobody can run the CLI from there (otherwise the refusal below proves nothing).
        'runuser -u nobody -- "$1/bin/dozen" --help >/dev/null',
        'echo CONTROL-OK',
        'exec runuser -u nobody -- "$1/bin/dozen" lab up --data-dir "$2" --api 127.0.0.1:0',
      ].join('\n');
      const r = await run('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script, 'sh', REPO_ROOT, repo, data]);
      expect(r.stdout, r.stderr).toContain('CONTROL-OK');
      expect(r.code, r.stderr).toBe(1);
      expect(r.stderr).toMatch(/cannot start the virtual lab:\n {2}- the virtual lab needs root/);
      expect(r.stderr).toMatch(/or run with --no-lab/);
    } finally {
      // Never recursive over the mount point: had the bind leaked out of its namespace, that would be the clone.
      rmSync(data, { recursive: true, force: true });
      rmdirSync(repo);
      rmdirSync(top);
    }
  });

  it('names each missing tool with the package that brings it', () => {
    const none = labProblems({ isRoot: () => true, hasCommand: () => false, exists: () => false });
    expect(none).toEqual([
      '`ip` is missing: apt-get install iproute2',
      '`qemu-system-arm` is missing: apt-get install qemu-system-arm',
      `${UBOOT_BIN} is missing: apt-get install u-boot-qemu`,
      '/dev/net/tun is missing: load the tun module (modprobe tun)',
    ]);
    expect(labProblems({ isRoot: () => true, hasCommand: () => true, exists: () => true })).toEqual([]);
  });
});

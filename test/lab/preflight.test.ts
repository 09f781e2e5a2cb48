import { execFile } from 'node:child_process';
import { mkdtempSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../../src/config.js';
import { labProblems, UBOOT_BIN } from '../../src/lab/preflight.js';
import { requireTools } from '../helpers/tools.js';

describe('the lab refuses to start without what it needs, and says how to get it', () => {
  it('as a user without root, `dozen lab up` exits non-zero naming root', async () => {
    requireTools('runuser');
    const dir = mkdtempSync(join(tmpdir(), 'preflight-'));
    chmodSync(dir, 0o777);
    const r = await new Promise<{ code: number; stderr: string }>((resolve) =>
      execFile('runuser', ['-u', 'nobody', '--', join(REPO_ROOT, 'bin/dozen'), 'lab', 'up', '--data-dir', dir, '--api', '127.0.0.1:0'], { timeout: 60_000 }, (err, _out, stderr) =>
        resolve({ code: (err as { code?: number } | null)?.code ?? 0, stderr }),
      ),
    );
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/cannot start the virtual lab:\n {2}- the virtual lab needs root/);
    expect(r.stderr).toMatch(/or run with --no-lab/);
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

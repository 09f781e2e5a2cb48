import { execFile } from 'node:child_process';
import { chmodSync, mkdtempSync, rmdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../../src/config.js';
import { LAB_KINDS, parseLabBoards, UBOOT_ARM, UBOOT_ARM64 } from '../../src/lab/kinds.js';
import { labProblems } from '../../src/lab/preflight.js';
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

  it('names each missing tool with the package that brings it, for the kinds of board asked for', () => {
    const bare = { isRoot: () => true, hasCommand: () => false, exists: () => false, machines: () => [] };
    expect(labProblems([LAB_KINDS.virt!], bare)).toEqual([
      '`ip` is missing: apt-get install iproute2',
      '/dev/net/tun is missing: load the tun module (modprobe tun)',
      '`qemu-system-arm` is missing (virt boards): apt-get install qemu-system-arm',
      `${UBOOT_ARM} is missing (virt boards): apt-get install u-boot-qemu`,
    ]);
    const all = parseLabBoards('virt:2,bpim2u:1,arm64:1');
    expect(labProblems(all, bare)).toEqual([
      '`ip` is missing: apt-get install iproute2',
      '/dev/net/tun is missing: load the tun module (modprobe tun)',
      '`qemu-system-arm` is missing (virt boards): apt-get install qemu-system-arm',
      `${UBOOT_ARM} is missing (virt boards): apt-get install u-boot-qemu`,
      '`mkenvimage` is missing (bpim2u boards): apt-get install u-boot-tools',
      '`mcopy` is missing (bpim2u boards): apt-get install mtools',
      '`qemu-system-aarch64` is missing (arm64 boards): apt-get install qemu-system-arm',
      `${UBOOT_ARM64} is missing (arm64 boards): apt-get install u-boot-qemu`,
    ]);
    // QEMU 7.2 (Debian 12's own) has everything but the Banana Pi machine.
    const old = { isRoot: () => true, hasCommand: () => true, exists: () => true, machines: () => ['virt', 'orangepi-pc'] };
    expect(labProblems(all, old)).toEqual([expect.stringMatching(/^qemu-system-arm has no -M bpim2u .*bookworm-backports/)]);
    expect(labProblems([LAB_KINDS.virt!], old)).toEqual([]);
    expect(labProblems(all, { ...old, machines: () => ['virt', 'bpim2u'] })).toEqual([]);
  });

  it('the lab’s board mix: kinds in order, a number is that many virt boards, and bad specs are named', () => {
    expect(parseLabBoards('virt:2,bpim2u:2,arm64:1').map((k) => k.name)).toEqual(['virt', 'virt', 'bpim2u', 'bpim2u', 'arm64']);
    expect(parseLabBoards('bpim2u, arm64').map((k) => k.model)).toEqual(['bananapi-m2u', 'qemu-virt-arm64']);
    expect(parseLabBoards(3).map((k) => k.model)).toEqual(['qemu-virt-armv7', 'qemu-virt-armv7', 'qemu-virt-armv7']);
    expect(parseLabBoards('')).toEqual([]);
    expect(() => parseLabBoards('virt:2,rpi:1')).toThrow('lab boards: "rpi:1" is not <kind>[:<count>] with kind one of virt, arm64, bpim2u');
    expect(() => parseLabBoards('constructor')).toThrow(/"constructor" is not/);
    expect(() => parseLabBoards('virt:17')).toThrow('lab boards: 17 boards; the lab holds at most 16');
  });
});

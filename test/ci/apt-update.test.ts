/**
 * apt-get update against a mirror caught mid-sync (scripts/lib/apt-update.sh, scripts/lab-sunxi/lib.sh):
 * a real bash sourcing the real scripts, with `apt-get` on PATH replaced by a script that fails the
 * way the mirror did in CI ("File has unexpected size ... Mirror sync in progress?") a set number of
 * times. The retry must outlast a short inconsistency and give up on a lasting one; the lab's lists may
 * go on without bookworm-security only, never without a suite the lab needs.
 */
import { execFile } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../../src/config.js';

const work = mkdtempSync(join(tmpdir(), 'apt-update-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const SECURITY_ERR = 'E: Failed to fetch http://deb.debian.org/debian-security/dists/bookworm-security/main/binary-armhf/Packages.xz  File has unexpected size (356624 != 356976). Mirror sync in progress?';
const MAIN_ERR = 'E: Failed to fetch http://deb.debian.org/debian/dists/bookworm/main/binary-armhf/Packages.xz  File has unexpected size (1 != 2). Mirror sync in progress?';

/** A fake apt-get in its own bin dir: the first `failures` calls print `err` and exit 100. */
function fakeApt(name: string, failures: number, err: string): { bin: string; calls: () => number } {
  const dir = join(work, name);
  mkdirSync(join(dir, 'bin'), { recursive: true });
  const counter = join(dir, 'calls');
  writeFileSync(counter, '');
  writeFileSync(join(dir, 'bin', 'apt-get'), `#!/bin/sh
echo "$*" >>'${counter}'
n=$(wc -l <'${counter}')
if [ "$n" -le ${failures} ]; then echo 'Get:1 http://deb.debian.org/debian bookworm InRelease'; echo '${err}' >&2; exit 100; fi
echo 'Reading package lists...'
`);
  chmodSync(join(dir, 'bin', 'apt-get'), 0o755);
  return { bin: join(dir, 'bin'), calls: () => readFileSync(counter, 'utf8').split('\n').filter(Boolean).length };
}

function bash(script: string, bin: string): Promise<{ code: number; out: string }> {
  return new Promise((resolve) =>
    execFile('bash', ['-c', script], {
      cwd: REPO_ROOT, timeout: 60_000,
      env: { ...process.env, PATH: `${bin}:${process.env.PATH}`, DOZEN_APT_RETRY_WAIT: '0', DOZEN_CACHE: join(work, 'cache') },
    }, (e, stdout, stderr) => resolve({ code: (e as { code?: number } | null)?.code ?? 0, out: stdout + stderr })),
  );
}

describe('apt_update_retrying', () => {
  const call = `. scripts/lib/apt-update.sh; apt_update_retrying "${work}/log" -q -oFoo=bar; echo "rc=$?"; cat "${work}/log"`;

  it('outlasts a mirror that is inconsistent for two tries, passing apt its options', async () => {
    const apt = fakeApt('short', 2, SECURITY_ERR);
    const r = await bash(call, apt.bin);
    expect(r.out).toContain('rc=0');
    expect(r.out).toMatch(/try 1 of 5\): E: Failed to fetch .*unexpected size/);
    expect(apt.calls()).toBe(3);
    expect(readFileSync(join(work, 'short', 'calls'), 'utf8')).toContain('-q -oFoo=bar update');
  });

  it('gives up after DOZEN_APT_TRIES and leaves the last error in the log', async () => {
    const apt = fakeApt('lasting', 99, MAIN_ERR);
    const r = await bash(`DOZEN_APT_TRIES=3; ${call}`, apt.bin);
    expect(r.out).toContain('rc=1');
    expect(r.out).toContain('unexpected size (1 != 2)');
    expect(apt.calls()).toBe(3);
  });
});

describe("the lab's apt lists (sunxi_apt_update)", () => {
  /** Sources lib.sh, lays out its armhf tree, drops in `lists` as the indexes apt "kept", then updates. */
  const update = (lists: string[]) => `. scripts/lab-sunxi/lib.sh; sunxi_apt armhf
    for l in ${lists.join(' ')}; do : >"$SUNXI_APT_DIR/lists/$l"; done
    DOZEN_APT_TRIES=2 sunxi_apt_update; echo "survived fresh=$SUNXI_LISTS_FRESH"`;
  const kept: [string, string] = ['deb.debian.org_debian_dists_bookworm_main_binary-armhf_Packages.lz4',
    'deb.debian.org_debian_dists_bookworm-backports_main_binary-armhf_Packages.lz4'];

  it('goes on, with a warning, when only bookworm-security stays inconsistent', async () => {
    rmSync(join(work, 'cache'), { recursive: true, force: true });
    const r = await bash(update(kept), fakeApt('sec-only', 99, SECURITY_ERR).bin);
    expect(r.code).toBe(0);
    expect(r.out).toContain('survived fresh=1');
    expect(r.out).toMatch(/WARNING: bookworm-security's index is inconsistent/);
  });

  it('fails the build when a suite the lab needs is the one missing', async () => {
    rmSync(join(work, 'cache'), { recursive: true, force: true });
    const r = await bash(update(kept), fakeApt('main', 99, MAIN_ERR).bin);
    expect(r.code).not.toBe(0);
    expect(r.out).not.toContain('survived');
    expect(r.out).toContain('apt-get update failed');
  });

  it('fails the build when security failed but the bookworm lists never arrived', async () => {
    rmSync(join(work, 'cache'), { recursive: true, force: true });
    const r = await bash(update([kept[1]]), fakeApt('no-main', 99, SECURITY_ERR).bin);
    expect(r.code).not.toBe(0);
    expect(r.out).not.toContain('survived');
  });
});

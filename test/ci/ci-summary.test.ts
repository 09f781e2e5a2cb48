/**
 * CI's closing line (scripts/ci-summary.mjs) from a real vitest run of small fixture files: a failing
 * hook and a skipped test count as failures, and the failing files are named above the line with why.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../../src/config.js';

const work = mkdtempSync(join(tmpdir(), 'ci-summary-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

function run(cmd: string, args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) =>
    execFile(cmd, args, { cwd: REPO_ROOT, timeout: 120_000, env: { ...process.env, CI: '' } }, (err, stdout, stderr) =>
      resolve({ code: (err as { code?: number } | null)?.code ?? 0, out: stdout + stderr }),
    ),
  );
}

/** Run vitest on the named fixtures with a JSON report, then the summary on it. */
async function summarize(fixtures: string[]): Promise<{ vitest: number; code: number; out: string }> {
  const report = join(work, `${fixtures.join('+')}.json`);
  const v = await run(join(REPO_ROOT, 'node_modules/.bin/vitest'), [
    'run', '--config', 'test/ci/fixtures/vitest.fixture.config.ts', '--reporter=json', `--outputFile=${report}`,
    ...fixtures.map((f) => `test/ci/fixtures/${f}.fixture.ts`),
  ]);
  const s = await run('node', ['scripts/ci-summary.mjs', report, String(v.code)]);
  return { vitest: v.code, ...s };
}

describe('CI closing line', () => {
  it('counts a file whose beforeAll fails, and names it', async () => {
    const r = await summarize(['hook-fails', 'passes']);
    expect(r.vitest).not.toBe(0);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/^FAILED test\/ci\/fixtures\/hook-fails\.fixture\.ts$/m);
    expect(r.out).toMatch(/never ran \(\w+\): never runs$/m);
    expect(r.out.trim().split('\n').at(-1)).toBe('vitest: 1 passed, 2 failed');
  });

  it('counts a skipped test as failed', async () => {
    const r = await summarize(['skips']);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/^FAILED test\/ci\/fixtures\/skips\.fixture\.ts$/m);
    expect(r.out.trim().split('\n').at(-1)).toBe('vitest: 1 passed, 1 failed');
  });

  it('shows why a test failed under its name, not only that it did', async () => {
    const r = await summarize(['fails']);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/^  failed: fails with a reason\n    AssertionError: ssh lab-1: expected 'the board never answered' to be 'login'/m);
    expect(r.out.trim().split('\n').at(-1)).toBe('vitest: 0 passed, 1 failed');
  });

  it('all green is 0 failed and exit 0', async () => {
    const r = await summarize(['passes']);
    expect([r.vitest, r.code]).toEqual([0, 0]);
    expect(r.out.trim().split('\n').at(-1)).toBe('vitest: 1 passed, 0 failed');
  });

  it('no report at all is a failure', async () => {
    const s = await run('node', ['scripts/ci-summary.mjs', join(work, 'missing.json'), '2']);
    expect(s.code).toBe(1);
    expect(s.out.trim().split('\n').at(-1)).toBe('vitest: 0 passed, 1 failed');
  });
});

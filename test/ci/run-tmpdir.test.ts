/**
 * Tests' temporary folders live under one root per run (test/helpers/global-setup.ts), removed when the
 * run ends: a worker sees it as its TMPDIR.
 */
import { statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { expect, it } from 'vitest';

it('a worker’s tmpdir is this run’s own root, a sticky world-writable folder like /tmp', () => {
  if (process.getuid?.() !== 0) throw new Error('the suite runs as root (namespaces, loop devices): run it as root');
  expect(tmpdir()).toMatch(new RegExp(`^/tmp/dozen-test-run-\\d+-[A-Za-z0-9]{6}$`));
  expect(statSync(tmpdir()).mode & 0o7777).toBe(0o1777);
});

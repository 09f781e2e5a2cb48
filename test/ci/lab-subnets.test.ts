/**
 * Every lab (test file or benchmark) owns its subnet 10.N.0.0/24, and lab MACs derive from it: two
 * files sharing N would share MACs and refuse each other's subnet. This keeps the allocation unique.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { expect, it } from 'vitest';
import { REPO_ROOT } from '../../src/config.js';

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? files(p) : p.endsWith('.ts') ? [p] : [];
  });
}

it('no two test files or benchmarks share a lab subnet', () => {
  const owners = new Map<number, string[]>();
  for (const f of [...files(join(REPO_ROOT, 'test')), ...files(join(REPO_ROOT, 'bench'))]) {
    const text = readFileSync(f, 'utf8');
    const nets = new Set<number>();
    for (const m of text.matchAll(/(?:startLabServer|labConfig)\(\{\s*net:\s*(\d+)/g)) nets.add(Number(m[1]));
    for (const m of text.matchAll(/subnet:\s*'10\.(\d+)\.0\.0\/24'/g)) nets.add(Number(m[1]));
    for (const n of nets) owners.set(n, [...(owners.get(n) ?? []), relative(REPO_ROOT, f)]);
  }
  expect(owners.size).toBeGreaterThan(5);
  const shared = [...owners].filter(([, fs]) => fs.length > 1).map(([n, fs]) => `10.${n}.0.0/24: ${fs.join(', ')}`);
  expect(shared).toEqual([]);
});

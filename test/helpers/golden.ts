import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';

/**
 * Compare with a checked-in file under test/golden. Exactly `UPDATE_GOLDEN=1` rewrites it, and the test
 * then fails saying so (a run that rewrote its expectations has checked nothing); any other value compares.
 * A missing golden file always fails, with the command that creates it: never written behind one's back.
 */
export function expectGolden(name: string, actual: Buffer | string): void {
  const file = join(import.meta.dirname, '..', 'golden', name);
  if (process.env.UPDATE_GOLDEN === '1') {
    const before = existsSync(file) ? readFileSync(file) : null;
    writeFileSync(file, actual);
    const what = before === null ? 'created' : before.equals(Buffer.from(actual)) ? 'rewrote (unchanged)' : 'rewrote (changed)';
    throw new Error(`UPDATE_GOLDEN=1: ${what} golden file ${file}; review it (git diff test/golden), then run again without UPDATE_GOLDEN`);
  }
  if (!existsSync(file)) {
    throw new Error(`golden file ${file} is missing; create it with: UPDATE_GOLDEN=1 npx vitest run <this test file>, review it, and commit it`);
  }
  expect(Buffer.from(actual)).toEqual(readFileSync(file));
}

import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';

/** Compare with a checked-in file under test/golden; UPDATE_GOLDEN=1 rewrites it instead. */
export function expectGolden(name: string, actual: Buffer | string): void {
  const file = join(import.meta.dirname, '..', 'golden', name);
  if (process.env.UPDATE_GOLDEN) writeFileSync(file, actual);
  if (!existsSync(file)) throw new Error(`golden file ${file} is missing; run with UPDATE_GOLDEN=1 to create it`);
  expect(Buffer.from(actual)).toEqual(readFileSync(file));
}

/**
 * Setup for every test file: the suite runs each store on its journal with verify on (vitest.config.ts),
 * and a journal line that does not replay to memory fails the file here, even when the update that
 * found it was a background job's whose error went only to a silent log.
 */
import { afterAll, expect } from 'vitest';
import { verifyFailures } from '../../src/store/store.js';

afterAll(() => {
  expect(verifyFailures, 'state journal lines that did not replay to memory (src/store/store.ts verify)').toEqual([]);
});

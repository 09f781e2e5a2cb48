/**
 * The log level is the product's setting (LOG_LEVEL, `info` when unset), never the test runner's:
 * the tests choose theirs in vitest.config.ts (`silent` unless LOG_LEVEL is given).
 */
import { execFileSync } from 'node:child_process';
import { expect, it } from 'vitest';
import { REPO_ROOT } from '../../src/config.js';
import { log } from '../../src/log.js';

function levelIn(env: NodeJS.ProcessEnv): string {
  const script = "const { log } = await import('./src/log.ts'); process.stdout.write(log.level);";
  return execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: REPO_ROOT, env, encoding: 'utf8' });
}

it('tests run at the level vitest.config.ts sets', () => {
  expect(process.env.LOG_LEVEL).toBeDefined();
  expect(log.level).toBe(process.env.LOG_LEVEL);
});

it('the product reads LOG_LEVEL, info by default, whatever runs it', () => {
  const { LOG_LEVEL: _, ...rest } = process.env;
  expect(levelIn({ ...rest, VITEST: 'true' })).toBe('info');
  expect(levelIn({ ...rest, LOG_LEVEL: 'warn' })).toBe('warn');
});

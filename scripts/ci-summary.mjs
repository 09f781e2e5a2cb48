#!/usr/bin/env node
// CI's closing line from vitest's JSON report: `vitest: N passed, M failed`.
// A failed file or hook counts even when no test in it failed (a `beforeAll` that throws marks its tests
// skipped), and in CI a collected test that never ran is a failure, not a skip. Each failing file is named
// above the line, with the first lines of why. Usage: ci-summary.mjs REPORT.json VITEST_EXIT_STATUS
import { existsSync, readFileSync } from 'node:fs';
import { relative } from 'node:path';

const [report, statusArg] = process.argv.slice(2);
const status = Number(statusArg ?? 0);
if (!report || !existsSync(report)) {
  console.log(`FAILED: no vitest report at ${report} (the test command exited ${status} before vitest wrote it: see above)`);
  console.log('vitest: 0 passed, 1 failed');
  process.exit(1);
}
/** The first lines of a failure's message, without colour codes: what a reader of CI's tail needs. */
function firstLines(messages = []) {
  const text = String(messages[0] ?? '').replace(/\x1b\[[0-9;]*m/g, '');
  return text.split('\n').filter((l) => l.trim() && !/^\s+at /.test(l)).slice(0, 4).map((l) => `    ${l.trim().slice(0, 400)}`);
}
const r = JSON.parse(readFileSync(report, 'utf8'));
let passed = 0;
let failed = 0;
const lines = [];
for (const file of r.testResults ?? []) {
  const name = relative(process.cwd(), file.name);
  const tests = file.assertionResults ?? [];
  const bad = tests.filter((t) => t.status === 'failed');
  const notRun = tests.filter((t) => t.status !== 'passed' && t.status !== 'failed');
  passed += tests.length - bad.length - notRun.length;
  failed += bad.length + notRun.length;
  const fileFailed = file.status === 'failed' || bad.length > 0 || notRun.length > 0;
  if (fileFailed && bad.length === 0 && notRun.length === 0) failed++; // a failing hook or import, no test to blame
  if (!fileFailed) continue;
  const why = [
    ...bad.flatMap((t) => [`  failed: ${t.fullName}`, ...firstLines(t.failureMessages)]),
    ...notRun.map((t) => `  never ran (${t.status}): ${t.fullName}`),
    ...(file.message ? [`  ${file.message.split('\n')[0].slice(0, 300)}`] : []),
  ];
  lines.push(`FAILED ${name}`, ...why.slice(0, 24), ...(why.length > 24 ? [`  … ${why.length - 24} more`] : []));
}
if (status !== 0 && failed === 0) {
  lines.push(`FAILED: vitest exited ${status} though every collected test passed (an unhandled error or a file that failed to load: see above)`);
  failed = 1;
}
for (const l of lines) console.log(l);
console.log(`vitest: ${passed} passed, ${failed} failed`);
process.exitCode = failed ? 1 : 0;

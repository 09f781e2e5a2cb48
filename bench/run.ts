/**
 * `npm run bench`: every benchmark, one after another (they share 2 cores), each measuring us and a
 * reference tool in the same run. Results print as tables and are written to bench/results.json.
 * `npm run bench -- tftp-loopback uboot-tftp` runs only those.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { holdRunLock, RUN_LOCK } from '../test/helpers/run-lock.js';

const BENCHES: Record<string, () => Promise<{ run: () => Promise<unknown> }>> = {
  'tftp-loopback': () => import('./tftp-loopback.js'),
  'uboot-tftp': () => import('./uboot-tftp.js'),
  leases: () => import('./leases.js'),
  disks: () => import('./disks.js'),
  'iscsi-perf': () => import('./iscsi-perf.js'),
  'console-fanout': () => import('./console-fanout.js'),
  containers: () => import('./containers.js'),
  'e2e-bounds': () => import('./e2e-bounds.js'),
  'api-bounds': () => import('./api-bounds.js'),
  'boot-bounds': () => import('./boot-bounds.js'),
  'network-attach': () => import('./network-attach.js'),
  models: () => import('./models.js'),
  'state-growth': () => import('./state-growth.js'),
  'dhcp-rate': () => import('./dhcp-rate.js'),
  storm: () => import('./storm.js'),
};

// A test run starting meanwhile would take this run's lab namespaces for a killed run's leftovers.
if (!(await holdRunLock())) console.warn(`another test or benchmark run holds ${RUN_LOCK}: run benchmarks alone`);

const only = process.argv.slice(2);
const results: Record<string, unknown> = {};
let failed = 0;
for (const [name, load] of Object.entries(BENCHES)) {
  if (only.length && !only.includes(name)) continue;
  console.log(`\n=== ${name}`);
  const t0 = Date.now();
  try {
    const r = await (await load()).run();
    results[name] = r;
    console.log(JSON.stringify(r, null, 2));
  } catch (err) {
    failed++;
    results[name] = { error: (err as Error).message };
    console.error(`${name} failed: ${(err as Error).stack}`);
  }
  console.log(`(${((Date.now() - t0) / 1000).toFixed(1)} s)`);
}
// A run of some benchmarks keeps the others' last results (each says when it ran).
const file = new URL('./results.json', import.meta.url);
const previous = only.length && existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as { results?: Record<string, unknown> }).results ?? {} : {};
const at = new Date().toISOString();
for (const name of Object.keys(results)) results[name] = { at, ...(results[name] as object) };
writeFileSync(file, JSON.stringify({ at, results: { ...previous, ...results } }, null, 2) + '\n');
process.exit(failed ? 1 : 0);

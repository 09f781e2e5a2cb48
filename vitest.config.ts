import { defineConfig } from 'vitest/config';

/**
 * Files that start QEMU boards, tgtd, dockerd, Chromium, debootstrap, or bind the DHCP port run one at a
 * time, after the light files: on 2 cores they would starve each other, and two of them would share
 * port 67, lab subnets and netns names. The light files (pure code, loopback servers on checked free
 * ports) run two at a time first.
 */
const SERIAL = [
  'test/e2e/**/*.test.ts',
  'test/security/**/*.test.ts',
  'test/network/**/*.test.ts',
  'test/containers/**/*.test.ts',
  'test/images/**/*.test.ts',
  'test/lab/**/*.test.ts',
  'test/storage/**/*.test.ts',
  'test/power/**/*.test.ts',
  'test/console/lab-console.test.ts',
  'test/console/browser.test.ts',
  'test/web/**/*.test.ts',
  'test/boot/dhcp-*.test.ts',
  'test/boot/boot-files.test.ts',
  'test/api/boards.test.ts',
  'test/store/store.test.ts',
  'test/storm/**/*.test.ts',
  'test/shared-boards/**/*.test.ts',
];

/**
 * The TFTP server's files run twice: on the native engine (the default, in the light project) and on the
 * JavaScript one (project tftp-js), the same contract for both.
 */
const TFTP_CONTRACT = ['test/boot/tftp-server.test.ts', 'test/boot/tftp-lossy.test.ts', 'test/boot/tftp-clients.test.ts', 'test/boot/tftp-fuzz.test.ts'];
// Tests log nothing unless asked (LOG_LEVEL=debug npx vitest run …); the servers they spawn inherit it.
// Every store in the suite (servers it spawns too) writes its journal from the first change and checks
// after each line that file + journal replay to memory: a mutation the journal missed fails its test.
const ENV = { LOG_LEVEL: process.env.LOG_LEVEL ?? 'silent', DOZEN_STORE_JOURNAL_ABOVE: '0', DOZEN_STORE_VERIFY: '1' };

export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 120_000,
    env: ENV,
    // Removes what a killed earlier run left (test netns, their links, loop filesystems).
    globalSetup: ['test/helpers/global-setup.ts'],
    setupFiles: ['test/helpers/store-verify.ts'],
    // CI also keeps a JSON report; .ci/run turns it into the closing line (scripts/ci-summary.mjs).
    reporters: process.env.CI ? ['default', ['json', { outputFile: 'test-artifacts/vitest.json' }]] : ['default'],
    projects: [
      {
        extends: true,
        test: { name: 'light', include: ['test/**/*.test.ts'], exclude: SERIAL, maxWorkers: 2, sequence: { groupOrder: 0 } },
      },
      {
        extends: true,
        test: { name: 'tftp-js', include: TFTP_CONTRACT, env: { ...ENV, TFTP_ENGINE: 'js' }, maxWorkers: 2, sequence: { groupOrder: 0 } },
      },
      {
        extends: true,
        test: { name: 'serial', include: SERIAL, maxWorkers: 1, fileParallelism: false, sequence: { groupOrder: 1 } },
      },
    ],
  },
});

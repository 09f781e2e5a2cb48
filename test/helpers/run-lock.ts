import { spawn } from 'node:child_process';

/**
 * Held by every test run (test/helpers/global-setup.ts) and every benchmark run (bench/run.ts): a run
 * that starts while another holds it must not clean up "leftover" test namespaces and devices, which
 * are then the other run's live lab boards.
 */
export const RUN_LOCK = '/run/dozen-test-run.lock';

/** Hold RUN_LOCK while this process lives; resolves false when another live run holds it (10 s wait). */
export function holdRunLock(): Promise<boolean> {
  // A parent holds it for us (bench/ab-lease-login.sh, for the whole A/B).
  if (process.env.DOZEN_RUN_LOCK_HELD === 'inherited') return Promise.resolve(true);
  return new Promise((resolve) => {
    const child = spawn('flock', ['-w', '10', '-E', '75', RUN_LOCK, 'sh', '-c', 'echo locked; while kill -0 "$0" 2>/dev/null; do sleep 2; done', String(process.pid)], {
      stdio: ['ignore', 'pipe', 'inherit'],
      detached: true,
    });
    child.stdout.once('data', () => {
      // Locked: from now on the holder must not keep this process alive.
      child.unref();
      child.stdout.destroy();
      resolve(true);
    });
    child.once('exit', () => resolve(false));
    child.once('error', () => resolve(false));
  });
}

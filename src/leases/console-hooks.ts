import { consoleIdOf } from '../auth/authz.js';
import type { ConsoleSessions } from '../console/index.js';
import type { Connector } from '../console/source.js';
import { log } from '../log.js';
import type { Lease } from '../store/schema.js';
import type { ConsoleHooks } from './ports.js';

/**
 * How leases drive consoles: a lease's output also goes to its log while it runs, and the log is
 * purged on release. The scrollback is emptied when a lease starts and when it ends, so a new tenant
 * never reads the last one's boot (its kernel command line carries that lease's secrets). A container lease's console is a session on its TTY, opened when the container
 * exists and closed on release (a board's session lives as long as the board).
 */
export function leaseConsoleHooks(consoles: ConsoleSessions, containerTty?: (leaseId: string) => Connector): ConsoleHooks {
  const isContainer = (consoleId: string) => consoleId.startsWith('container:');
  return {
    leaseStarted: (consoleId, leaseId) =>
      void (async () => {
        consoles.clearScrollback(consoleId);
        if (isContainer(consoleId) && containerTty) await consoles.attach(consoleId, containerTty(leaseId));
        await consoles.startLeaseLog(consoleId, leaseId);
      })().catch((err) => log.warn({ err, leaseId }, 'lease console')),
    leaseEnded: async (consoleId, leaseId) => {
      consoles.clearScrollback(consoleId);
      await consoles.purgeLeaseLog(leaseId);
      if (isContainer(consoleId)) await consoles.remove(consoleId, 'lease released');
    },
  };
}

/**
 * After a restart, before anything powers on (so no boot line is missed): live board leases keep logging.
 * A board without a serial line has no session and nothing to log: it must not stop the start.
 */
export async function resumeBoardLeaseLogs(consoles: ConsoleSessions, leases: Lease[]): Promise<void> {
  for (const l of leases.filter((x) => x.boardId && x.state !== 'released' && consoles.state(x.boardId) !== undefined)) await consoles.startLeaseLog(l.boardId!, l.id);
}

/** After a restart: active container leases get their TTY back as a console, and keep logging. */
export async function resumeContainerConsoles(consoles: ConsoleSessions, leases: Lease[], containerTty: (leaseId: string) => Connector): Promise<void> {
  for (const l of leases.filter((x) => x.kind === 'container' && x.state === 'active')) {
    await consoles.attach(consoleIdOf(l), containerTty(l.id));
    await consoles.startLeaseLog(consoleIdOf(l), l.id);
  }
}

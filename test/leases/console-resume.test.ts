/** After a restart, live leases' console logs resume: a board without a serial line must not stop the server's start. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { ConsoleSessions } from '../../src/console/sessions.js';
import { resumeBoardLeaseLogs } from '../../src/leases/console-hooks.js';
import type { Lease } from '../../src/store/schema.js';

it('resumes nothing, and does not throw, for a live lease on a board without a serial line', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'console-resume-'));
  try {
    const consoles = new ConsoleSessions({ dataDir: dir });
    const lease = { id: 'l1', tenantId: 't', kind: 'board', boardId: 'no-line', image: 'test', sshKeys: [], hostname: 'h', state: 'active', createdAt: new Date().toISOString() } satisfies Lease;
    await expect(resumeBoardLeaseLogs(consoles, [lease])).resolves.toBeUndefined();
    expect(consoles.state('no-line')).toBeUndefined();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

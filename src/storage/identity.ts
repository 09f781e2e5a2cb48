import { randomUUID } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * One controller owns a storage directory. The directory and the state file each carry the controller's
 * id; a server whose state does not match the directory's refuses to start instead of reconciling disks
 * it knows nothing of (a second server with a fresh --data-dir, or a state file from another machine).
 */
export const IDENTITY_FILE = 'controller.json';

export class StorageOwnershipError extends Error {}

export interface OwnershipCheck {
  /** The controller id both now carry. */
  id: string;
  /** What happened: both new, the directory took the state's id, or the state took the directory's (adopt). */
  outcome: 'new' | 'claimed' | 'matched' | 'adopted';
}

export async function readStorageOwner(dir: string): Promise<string | undefined> {
  const text = await readFile(join(dir, IDENTITY_FILE), 'utf8').catch(() => undefined);
  if (text === undefined) return undefined;
  const id = (JSON.parse(text) as { controllerId?: unknown }).controllerId;
  if (typeof id !== 'string' || !id) throw new StorageOwnershipError(`${join(dir, IDENTITY_FILE)} names no controllerId: fix or remove it`);
  return id;
}

async function writeStorageOwner(dir: string, id: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  const tmp = join(dir, `.${IDENTITY_FILE}.tmp`);
  await writeFile(tmp, JSON.stringify({ controllerId: id, since: new Date().toISOString() }) + '\n', { mode: 0o644 });
  await rename(tmp, join(dir, IDENTITY_FILE));
}

/**
 * Match the state's controller id (undefined for a new state file) with the storage directory's.
 * `adopt` lets a state take over a directory that names another controller: disks its leases do not
 * hold are then quarantined by the reconcile, never destroyed.
 */
export async function claimStorage(dir: string, stateId: string | undefined, o: { adopt: boolean; stateFile: string }): Promise<OwnershipCheck> {
  const owner = await readStorageOwner(dir);
  if (!owner) {
    const id = stateId ?? randomUUID();
    await writeStorageOwner(dir, id);
    return { id, outcome: stateId ? 'claimed' : 'new' };
  }
  if (owner === stateId) return { id: owner, outcome: 'matched' };
  if (o.adopt) {
    const id = stateId ?? owner;
    if (id !== owner) await writeStorageOwner(dir, id);
    return { id, outcome: 'adopted' };
  }
  throw new StorageOwnershipError(
    [
      `storage ${dir} belongs to controller ${owner}, but this server's state (${o.stateFile}) ${stateId ? `is controller ${stateId}` : 'is new'}.`,
      'Starting would treat that controller\'s disks as orphans. Either:',
      `  - start with that controller's --data-dir (its state file names controllerId ${owner}),`,
      '  - give this server a storage.dir of its own, or',
      '  - adopt the directory with storage.adopt=true (config) or --adopt-storage: disks none of this',
      '    server\'s leases hold are quarantined (GET /v1/storage/quarantine), never deleted.',
    ].join('\n'),
  );
}

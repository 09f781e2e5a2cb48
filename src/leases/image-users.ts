import type { Store } from '../store/store.js';

/**
 * Why an image cannot be deleted now (the image importer's `inUse`): leases or boards use it, or lease
 * disks were cloned from it. Null when nothing does.
 */
export async function imageUsers(name: string, store: Store, disks?: { imageInUse(image: string): Promise<string[]> }): Promise<string | null> {
  const leases = store.state.leases.filter((l) => l.image === name && l.state !== 'released');
  if (leases.length) return `lease(s) ${leases.map((l) => l.id).join(', ')}`;
  const boards = store.state.boards.filter((b) => b.image === name);
  if (boards.length) return `default image of board(s) ${boards.map((b) => b.id).join(', ')}`;
  const inUse = disks ? await disks.imageInUse(name) : [];
  return inUse.length ? `lease disks ${inUse.join(', ')}` : null;
}

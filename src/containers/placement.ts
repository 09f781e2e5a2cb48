import { ConflictError } from '../util/errors.js';
import type { Platform } from './types.js';

/** What placement knows of one shared board. */
export interface PlacementCandidate {
  id: string;
  /** Why it can't take anything ("is down", "is unreachable: ..."); null when it can. */
  unavailable: string | null;
  /** What kind of reason `unavailable` is (the 409's headline names a missing quota or fence). */
  unavailableKind?: 'down' | 'leaving' | 'quota' | 'unfenced';
  freeMb: number;
  cpus: number;
  platforms: Platform[];
}

export interface PlacementNeed {
  memoryMb: number;
  cpus: number;
  /** null when the image's platform is not known before placement (checked on the chosen board). */
  platform: Platform | null;
}

/** 409 with the reason per board; `candidates` says what each board had. */
export class NoCapacityError extends ConflictError {
  constructor(
    message: string,
    readonly candidates: PlacementCandidate[],
  ) {
    super(message);
  }
}

/**
 * The board with the most free memory that fits (ties: the lower id, so placement is predictable).
 * Free memory = capacity − reserve − the memory limits of our containers on it; see host.ts.
 */
export function choosePlacement(candidates: PlacementCandidate[], need: PlacementNeed): string {
  const reasons: string[] = [];
  const fits: PlacementCandidate[] = [];
  for (const c of [...candidates].sort((a, b) => a.id.localeCompare(b.id))) {
    if (c.unavailable) reasons.push(`${c.id} ${c.unavailable}`);
    else if (need.platform && !c.platforms.includes(need.platform)) reasons.push(`${c.id} runs ${c.platforms.join(', ')} only`);
    else if (c.cpus < need.cpus) reasons.push(`${c.id} has ${c.cpus} CPUs`);
    else if (c.freeMb < need.memoryMb) reasons.push(`${c.id} has ${Math.max(0, c.freeMb)} MiB`);
    else fits.push(c);
  }
  if (fits.length === 0) {
    // Per-board reasons carry the CPU and platform misfits, so the headline stays about memory.
    const why = reasons.length ? reasons.join(', ') : 'no shared board is configured';
    const quota = candidates.some((c) => c.unavailableKind === 'quota') ? ' and enforces a disk quota' : '';
    const fence = candidates.some((c) => c.unavailableKind === 'unfenced') ? ' and is fenced from the boot network' : '';
    throw new NoCapacityError(`no shared board has ${need.memoryMb} MiB free${quota}${fence}: ${why}`, candidates);
  }
  fits.sort((a, b) => b.freeMb - a.freeMb || a.id.localeCompare(b.id));
  return fits[0]!.id;
}

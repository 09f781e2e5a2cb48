import { InventoryBootDecider, type DeciderOptions } from './decider.js';
import type { BootDecider } from './spec.js';

/**
 * Every boot decider, by name (contract: test/boot/decider.contract.test.ts runs each one).
 *   inventory  enrolled boards boot their image (or their lease's), with their lease's kernel arguments
 */
export const BOOT_DECIDERS: Record<string, (o: DeciderOptions) => BootDecider> = {
  inventory: (o) => new InventoryBootDecider(o),
};

export function bootDecider(name: string, o: DeciderOptions): BootDecider {
  const factory = Object.hasOwn(BOOT_DECIDERS, name) ? BOOT_DECIDERS[name] : undefined; // not 'constructor' & co.
  if (!factory) throw new Error(`unknown boot decider "${name}" (known: ${Object.keys(BOOT_DECIDERS).join(', ')})`);
  return factory(o);
}

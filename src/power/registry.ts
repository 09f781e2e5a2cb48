import { z } from 'zod';
import type { PowerSpec } from '../store/schema.js';
import type { PowerDriver } from './driver.js';
import { QemuPower } from './qemu.js';

/** Every power driver, by the name a board's `power.driver` uses. */
export const POWER_DRIVERS: Record<string, (spec: PowerSpec) => PowerDriver> = {
  qemu: (spec) => new QemuPower(z.object({ qmp: z.string().min(1) }).parse(spec).qmp),
};

export function powerDriver(spec: PowerSpec): PowerDriver {
  const factory = POWER_DRIVERS[spec.driver];
  if (!factory) throw new Error(`unknown power driver "${spec.driver}" (known: ${Object.keys(POWER_DRIVERS).join(', ')})`);
  return factory(spec);
}

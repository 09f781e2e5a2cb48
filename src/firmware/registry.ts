import { z } from 'zod';
import { CommandFirmware } from './command.js';
import type { FirmwareDriver } from './driver.js';
import { FileFirmware } from './file.js';

export type FirmwareSpec = { driver: string } & Record<string, unknown>;

/** Every firmware driver, by the name a board's `firmware.driver` uses. */
export const FIRMWARE_DRIVERS: Record<string, (spec: FirmwareSpec) => FirmwareDriver> = {
  file: (spec) => new FileFirmware(z.object({ path: z.string().min(1), golden: z.string().min(1), inPlace: z.boolean().optional() }).parse(spec)),
  command: (spec) => new CommandFirmware(z.object({ verify: z.string().min(1), restore: z.string().min(1), timeoutMs: z.number().int().positive().optional() }).parse(spec)),
};

export function firmwareDriver(spec: FirmwareSpec): FirmwareDriver {
  const factory = Object.hasOwn(FIRMWARE_DRIVERS, spec.driver) ? FIRMWARE_DRIVERS[spec.driver] : undefined; // not "constructor" & co.
  if (!factory) throw new Error(`unknown firmware driver "${spec.driver}" (known: ${Object.keys(FIRMWARE_DRIVERS).join(', ')})`);
  try {
    return factory(spec);
  } catch (err) {
    if (err instanceof z.ZodError) throw new Error(`bad parameters for firmware driver "${spec.driver}": ${z.prettifyError(err)}`);
    throw err;
  }
}

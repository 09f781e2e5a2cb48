import { z } from 'zod';
import type { PowerSpec } from '../store/schema.js';
import { CommandPower } from './command.js';
import type { PowerDriver } from './driver.js';
import { ManualPower } from './manual.js';
import { QemuPower } from './qemu.js';

const commandSpec = z.object({
  on: z.string().min(1),
  off: z.string().min(1),
  cycle: z.string().min(1).optional(),
  state: z.string().min(1).optional(),
  timeoutMs: z.number().int().positive().max(600_000).optional(),
  cycleDelayMs: z.number().int().nonnegative().max(60_000).optional(),
});

/** Every power driver, by the name a board's `power.driver` uses. */
export const POWER_DRIVERS: Record<string, (spec: PowerSpec, boardId: string) => PowerDriver> = {
  qemu: (spec) => new QemuPower(z.object({ qmp: z.string().min(1) }).parse(spec).qmp),
  command: (spec) => new CommandPower(commandSpec.parse(spec)),
  manual: (_spec, boardId) => new ManualPower(boardId),
};

/** The driver for a board's power spec; the board id names it to people (manual) and in errors. */
export function powerDriver(spec: PowerSpec, boardId = '(unnamed)'): PowerDriver {
  const factory = Object.hasOwn(POWER_DRIVERS, spec.driver) ? POWER_DRIVERS[spec.driver] : undefined; // not "constructor" & co.
  if (!factory) throw new Error(`unknown power driver "${spec.driver}" (known: ${Object.keys(POWER_DRIVERS).join(', ')})`);
  try {
    return factory(spec, boardId);
  } catch (err) {
    if (err instanceof z.ZodError) throw new Error(`bad parameters for power driver "${spec.driver}": ${z.prettifyError(err)}`);
    throw err;
  }
}

import { pino, type Logger } from 'pino';

export type { Logger };

/**
 * The process-wide logger. Its level comes from LOG_LEVEL (pino's levels: fatal … trace, or silent),
 * `info` when unset; LOG_LEVEL=debug for protocol detail.
 */
export const log: Logger = pino({
  level: process.env.LOG_LEVEL ?? 'info',
  base: undefined,
});

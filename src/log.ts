import { pino, type Logger } from 'pino';

export type { Logger };

/** The process-wide logger. LOG_LEVEL=debug for protocol detail; tests default to silent. */
export const log: Logger = pino({
  level: process.env.LOG_LEVEL ?? (process.env.VITEST ? 'silent' : 'info'),
  base: undefined,
});

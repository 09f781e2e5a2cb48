import { pino, type DestinationStream, type Logger } from 'pino';

export type { Logger };

const LEVELS: Record<number, { name: string; colour: string }> = {
  10: { name: 'TRACE', colour: '\x1b[90m' },
  20: { name: 'DEBUG', colour: '\x1b[36m' },
  30: { name: 'INFO', colour: '\x1b[32m' },
  40: { name: 'WARN', colour: '\x1b[33m' },
  50: { name: 'ERROR', colour: '\x1b[31m' },
  60: { name: 'FATAL', colour: '\x1b[35m' },
};
const DIM = '\x1b[2m';
const RESET = '\x1b[0m';

const two = (n: number, w = 2) => String(n).padStart(w, '0');
// Control characters are always quoted (escaped): a client-chosen string (an SSH user name) must not
// reach the operator's terminal as escape sequences.
const value = (v: unknown) => (typeof v === 'string' ? (/^[^\s"=\x00-\x1f\x7f]+$/.test(v) ? v : JSON.stringify(v)) : JSON.stringify(v));

/**
 * One pino JSON line as one human line: `12:04:05.123 INFO  message key=value …` (local time). An
 * `err` shows as its type and message (the JSON output keeps the stack). Anything that is not a pino
 * line is passed through as it is.
 */
export function prettyLine(line: string, o: { colour: boolean }): string {
  let rec: Record<string, unknown>;
  try {
    rec = JSON.parse(line);
  } catch {
    return line.endsWith('\n') ? line : `${line}\n`;
  }
  if (!rec || typeof rec !== 'object') return line.endsWith('\n') ? line : `${line}\n`;
  const { level, time, msg, err, ...rest } = rec as { level?: number; time?: number; msg?: string; err?: { type?: string; message?: string } } & Record<string, unknown>;
  const d = new Date(typeof time === 'number' ? time : Date.now());
  const ts = `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}.${two(d.getMilliseconds(), 3)}`;
  const lv = LEVELS[level ?? 30] ?? { name: String(level), colour: '' };
  const fields = Object.entries(rest).map(([k, v]) => `${k}=${value(v)}`);
  if (err) fields.unshift(`err=${value(`${err.type ?? 'Error'}: ${err.message ?? ''}`)}`);
  const c = (code: string, s: string) => (o.colour && code ? `${code}${s}${RESET}` : s);
  return `${c(DIM, ts)} ${c(lv.colour, lv.name.padEnd(5))} ${msg ?? ''}${fields.length ? ` ${c(DIM, fields.join(' '))}` : ''}\n`;
}

/** A pino destination that writes pretty lines to `out`. */
export function prettyDestination(out: { write(s: string): unknown }, o: { colour: boolean }): DestinationStream {
  return { write: (s: string) => void out.write(prettyLine(s.endsWith('\n') ? s.slice(0, -1) : s, o)) };
}

/**
 * Pretty when stdout is a terminal, JSON lines otherwise (services, pipes, files). LOG_FORMAT=json or
 * pretty decides instead; NO_COLOR turns the colours off.
 */
function destination(): DestinationStream | undefined {
  const format = process.env.LOG_FORMAT ?? (process.stdout.isTTY ? 'pretty' : 'json');
  if (format !== 'pretty') return undefined;
  return prettyDestination(process.stdout, { colour: Boolean(process.stdout.isTTY) && !process.env.NO_COLOR });
}

/**
 * The process-wide logger. Its level comes from LOG_LEVEL (pino's levels: fatal … trace, or silent),
 * `info` when unset; LOG_LEVEL=debug for protocol detail.
 */
const options = { level: process.env.LOG_LEVEL ?? 'info', base: undefined };
const pretty = destination();
export const log: Logger = pretty ? pino(options, pretty) : pino(options);

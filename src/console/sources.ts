import { DEFAULT_BACKOFF, ReconnectingSource, type BackoffOptions } from './reconnect.js';
import type { SerialBinding } from './serial-port.js';
import { serialConnector } from './serial-transport.js';
import type { ConsoleSource, Connector } from './source.js';
import { tcpConnector } from './tcp-transport.js';

export interface SourceOptions {
  baudRate?: number;
  backoff?: BackoffOptions;
  /** Injected serialport binding (default: native). */
  binding?: SerialBinding;
  /** flock local devices (default true): a second reader on a line would steal bytes. */
  lock?: boolean;
}

/** One kind of console line: how a board's `serial` field names it, and the connector it gets. */
export interface ConsoleSourceKind {
  /** How such a line is written, for the error a line of no kind gets. */
  form: string;
  matches(serial: string): boolean;
  connector(serial: string, o: SourceOptions): Connector;
}

/**
 * Every kind of console line, by name (contract: test/console/source.contract.test.ts runs each one).
 *   device  a local serial device or pty: /dev/ttyUSB0, /dev/serial/by-id/…, a lab board's <id>.tty (serialport)
 *   tcp     a raw byte pipe to a network serial server (ser2net raw, terminal servers): no BREAK
 *   telnet  a telnet network serial server (ser2net telnet): binary both ways, BREAK as a telnet command
 */
export const CONSOLE_SOURCES: Record<string, ConsoleSourceKind> = {
  device: {
    form: 'a device path',
    matches: (s) => s.startsWith('/'),
    connector: (path, o) => serialConnector({ path, baudRate: o.baudRate ?? 115200, lock: o.lock, binding: o.binding }),
  },
  tcp: { form: 'tcp://host:port', matches: (s) => s.startsWith('tcp://'), connector: (url) => tcpConnector(url) },
  telnet: { form: 'telnet://host:port', matches: (s) => s.startsWith('telnet://'), connector: (url) => tcpConnector(url) },
};

/** The name of the CONSOLE_SOURCES kind a board's `serial` field is, or undefined when it is none. */
export function consoleSourceKind(serial: string): string | undefined {
  return Object.entries(CONSOLE_SOURCES).find(([, k]) => k.matches(serial))?.[0];
}

/** A board's `serial` field → its connector: a device path, `tcp://host:port` (raw) or `telnet://host:port`. */
export function connectorFor(serial: string, o: SourceOptions = {}): Connector {
  const kind = Object.values(CONSOLE_SOURCES).find((k) => k.matches(serial));
  if (!kind) {
    const forms = Object.values(CONSOLE_SOURCES).map((k) => k.form);
    throw new Error(`unsupported console line ${JSON.stringify(serial)}: use ${forms.slice(0, -1).join(', ')} or ${forms.at(-1)}`);
  }
  return kind.connector(serial, o);
}

export function openConsoleSource(serial: string, o: SourceOptions = {}): ConsoleSource {
  return new ReconnectingSource(connectorFor(serial, o), o.backoff ?? DEFAULT_BACKOFF);
}

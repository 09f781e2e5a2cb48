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

/** A board's `serial` field → its connector: a device path, `tcp://host:port` (raw) or `telnet://host:port`. */
export function connectorFor(serial: string, o: SourceOptions = {}): Connector {
  if (serial.startsWith('/')) return serialConnector({ path: serial, baudRate: o.baudRate ?? 115200, lock: o.lock, binding: o.binding });
  if (/^(tcp|telnet):\/\//.test(serial)) return tcpConnector(serial);
  throw new Error(`unsupported console line ${JSON.stringify(serial)}: use a device path, tcp://host:port or telnet://host:port`);
}

export function openConsoleSource(serial: string, o: SourceOptions = {}): ConsoleSource {
  return new ReconnectingSource(connectorFor(serial, o), o.backoff ?? DEFAULT_BACKOFF);
}

import type { EventEmitter } from 'node:events';

/** How a board's serial line is doing, as shown to viewers and in the API. */
export type LinkState = 'connecting' | 'connected' | 'disconnected' | 'closed';

export interface ConsoleState {
  /** Where the line is: `/dev/ttyUSB0 @115200`, `tcp://host:port`, `telnet://host:port`. */
  target: string;
  state: LinkState;
  /** When `state` last changed (ISO 8601). */
  since: string;
  /** Failed connection attempts since the line was last up. */
  attempts: number;
  /** Why the line is down, or why the last attempt failed. */
  lastError?: string;
  /** While disconnected: how long until the next attempt. */
  retryInMs?: number;
  bytesIn: number;
  bytesOut: number;
}

export type ConsoleSourceEvents = { data: [Buffer]; state: [ConsoleState] };

/**
 * A byte stream to one board's serial line that stays usable across unplugs: it reconnects by itself
 * and says so through `state` events. Implementations: local devices and network serial servers, both
 * behind the one reconnecting owner in reconnect.ts.
 */
export interface ConsoleSource extends EventEmitter<ConsoleSourceEvents> {
  readonly target: string;
  state(): ConsoleState;
  /** Rejects when the line is down: input is never queued for later (it would arrive out of context). */
  write(bytes: Uint8Array): Promise<void>;
  /** A serial BREAK (Magic SysRq on Linux consoles). */
  sendBreak(): Promise<void>;
  close(): Promise<void>;
}

export type TransportEvents = { data: [Buffer]; disconnected: [Error] };

/**
 * One connection to a line. A transport never reconnects: it reports `disconnected` once, and its
 * owner decides what to do (zigbee-herdsman's rule: transports report, owners decide).
 */
export interface Transport extends EventEmitter<TransportEvents> {
  write(bytes: Uint8Array): Promise<void>;
  sendBreak(): Promise<void>;
  close(): Promise<void>;
}

/** Makes transports to one target; `connect` rejects when the target is not there right now. */
export interface Connector {
  readonly target: string;
  connect(): Promise<Transport>;
}

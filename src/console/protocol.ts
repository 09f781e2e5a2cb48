/**
 * The console WebSocket protocol, shared by the server, `dozen console` and the web page (which mirrors it
 * in plain JS). Binary frames are raw serial bytes, both ways. Text frames are JSON control messages.
 *
 * Authentication: `Authorization: Bearer <token>` (CLI, scripts). Browsers cannot set headers on a
 * WebSocket, so they offer two subprotocols: `dozen.console.v1` and `bearer.<token>`; the server answers
 * with `dozen.console.v1` only, never echoing the token.
 */
import type { ConsoleState } from './source.js';

export const SUBPROTOCOL = 'dozen.console.v1';
export const BEARER_PREFIX = 'bearer.';

/** Close codes (4000–4999 are the application's). */
export const CLOSE = {
  /** The viewer did not read fast enough; reconnecting replays the scrollback. */
  tooSlow: 4008,
  /** The board's console went away for good (board removed, server stopping). */
  gone: 4010,
  /** What the socket was granted for ended: lease released or reimaged, token revoked or expired. */
  revoked: 4003,
} as const;

export type ClientMessage = { type: 'break' } | { type: 'resize'; cols: number; rows: number };

export interface ViewerInfo {
  who: string;
  canType: boolean;
}

export type InfoEvent = 'hello' | 'join' | 'leave' | 'typing' | 'break' | 'denied' | 'error' | 'slow';

export type ServerMessage =
  | ({ type: 'state' } & ConsoleState)
  | {
      type: 'info';
      event: InfoEvent;
      message: string;
      who?: string;
      board?: string;
      canType?: boolean;
      /** hello only: who else is watching. Later joins and leaves say only who (and `count`), so a join costs O(viewers), not O(viewers²). */
      viewers?: ViewerInfo[];
      /** join/leave: how many viewers there are now. */
      count?: number;
      /** hello: bytes of scrollback about to follow as binary frames. */
      scrollback?: number;
    };

export function parseClientMessage(text: string): ClientMessage | null {
  let m: unknown;
  try {
    m = JSON.parse(text);
  } catch {
    return null;
  }
  if (!m || typeof m !== 'object') return null;
  const o = m as Record<string, unknown>;
  if (o.type === 'break') return { type: 'break' };
  if (o.type === 'resize' && Number.isInteger(o.cols) && Number.isInteger(o.rows)) return { type: 'resize', cols: o.cols as number, rows: o.rows as number };
  return null;
}

/**
 * The console's escape sequence, as OpenSSH and Equinix Metal's SOS read it: `~.` typed at the start of a
 * line (the first bytes of the session, or right after Enter) leaves; `~~` there sends one `~`; a `~`
 * followed by anything else sends both bytes. Pure: the state goes in and comes out, so a `~` at the end
 * of one keystroke chunk and a `.` at the start of the next still leave.
 */
export interface EscapeState {
  /** The next byte starts a line. */
  atLineStart: boolean;
  /** A `~` at the start of a line was held back, waiting for the byte after it. */
  heldTilde: boolean;
}

export const ESCAPE_START: EscapeState = { atLineStart: true, heldTilde: false };

export interface EscapeResult {
  state: EscapeState;
  /** The bytes to send to the board (everything before `~.`, with `~~` made one `~`). */
  forward: Buffer;
  /** `~.` was typed: leave (bytes after it are dropped). */
  leave: boolean;
}

const TILDE = 0x7e;
const DOT = 0x2e;
const CR = 0x0d;
const LF = 0x0a;

export function scanEscape(state: EscapeState, input: Uint8Array): EscapeResult {
  const out: number[] = [];
  let { atLineStart, heldTilde } = state;
  for (const b of input) {
    if (heldTilde) {
      heldTilde = false;
      if (b === DOT) return { state: { atLineStart: false, heldTilde: false }, forward: Buffer.from(out), leave: true };
      out.push(TILDE);
      if (b === TILDE) {
        atLineStart = false;
        continue;
      }
      // not an escape: the byte is an ordinary one (Enter after `~` starts a new line)
    } else if (atLineStart && b === TILDE) {
      heldTilde = true;
      continue;
    }
    out.push(b);
    atLineStart = b === CR || b === LF;
  }
  return { state: { atLineStart, heldTilde }, forward: Buffer.from(out), leave: false };
}

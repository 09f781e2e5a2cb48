import { describe, expect, it } from 'vitest';
import { ESCAPE_START, scanEscape, type EscapeState } from '../../src/gateway/escape.js';

/** Feeds chunks in order; returns what reached the board and whether (and after which chunk) it left. */
function feed(...chunks: string[]): { forwarded: string; leftAt: number } {
  let st: EscapeState = ESCAPE_START;
  let forwarded = '';
  for (const [i, c] of chunks.entries()) {
    const r = scanEscape(st, Buffer.from(c, 'latin1'));
    st = r.state;
    forwarded += r.forward.toString('latin1');
    if (r.leave) return { forwarded, leftAt: i };
  }
  return { forwarded, leftAt: -1 };
}

describe('console escape ~.', () => {
  it('leaves on ~. at the start of the session', () => {
    expect(feed('~.')).toEqual({ forwarded: '', leftAt: 0 });
  });

  it('leaves on ~. after Enter (CR or LF), forwarding what came before and nothing after', () => {
    expect(feed('ls\r~.rm -rf /\r')).toEqual({ forwarded: 'ls\r', leftAt: 0 });
    expect(feed('ls\n~.')).toEqual({ forwarded: 'ls\n', leftAt: 0 });
  });

  it('is plain text in the middle of a line', () => {
    expect(feed('echo a~.b\r')).toEqual({ forwarded: 'echo a~.b\r', leftAt: -1 });
  });

  it('works across chunk boundaries (one keystroke per chunk, as a terminal sends them)', () => {
    expect(feed('x', '\r', '~', '.')).toEqual({ forwarded: 'x\r', leftAt: 3 });
  });

  it('holds a lone ~ until the next byte, then sends both', () => {
    let r = scanEscape(ESCAPE_START, Buffer.from('~'));
    expect(r.forward.length).toBe(0);
    r = scanEscape(r.state, Buffer.from('x'));
    expect(r.forward.toString()).toBe('~x');
    expect(r.leave).toBe(false);
  });

  it('~~ sends one ~ and is no escape; ~ then Enter starts a new line', () => {
    expect(feed('~~.')).toEqual({ forwarded: '~.', leftAt: -1 });
    expect(feed('~\r~.')).toEqual({ forwarded: '~\r', leftAt: 0 });
  });

  it('does not leave on . alone or ~ not at line start', () => {
    expect(feed('.', 'a~', '.')).toEqual({ forwarded: '.a~.', leftAt: -1 });
  });
});

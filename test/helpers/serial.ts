import type { ConsoleSessions } from '../../src/console/index.js';
import { OutputWatcher } from '../../src/util/wait-for.js';

export interface TestConsole {
  out: OutputWatcher;
  type: (s: string) => Promise<void>;
  close: () => Promise<void>;
}

/**
 * Watch and type on a board's console through the server's own session (the session holds the
 * line's lock, as on a real serial adapter: a second reader would steal half the bytes).
 */
export function sessionConsole(consoles: ConsoleSessions, boardId: string): TestConsole {
  const session = consoles.get(boardId);
  if (!session) throw new Error(`no console session for ${boardId}`);
  const out = new OutputWatcher(session);
  return {
    out,
    // Type slowly: the emulated UART has a tiny FIFO and TCG boards are slow to drain it.
    type: async (s: string) => {
      for (const ch of s) {
        await session.source.write(Buffer.from(ch));
        await new Promise((r) => setTimeout(r, 15));
      }
    },
    close: async () => {},
  };
}

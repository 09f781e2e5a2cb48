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

let runs = 0;

/**
 * Runs a shell command on a board's console and returns its output alone. The console echoes what is
 * typed, so the output is cut between two markers the shell computes (`$((6*6))`, `$((6*7))`): the
 * echoed command line holds neither, so a word the command would print (`echo GOT || echo NOTHING`)
 * is only found when the command printed it.
 */
export async function runOnConsole(con: TestConsole, cmd: string, o: { what: string; timeoutMs?: number }): Promise<string> {
  const m = `R${++runs}X${process.pid % 1000}`;
  await con.type(`echo ${m}-$((6*6)); ${cmd}; echo ${m}-$((6*7))\n`);
  const got = await con.out.waitFor(new RegExp(`${m}-36\\r?\\n([\\s\\S]*?)${m}-42`), o.timeoutMs ?? 60_000, `${o.what}: ${cmd.slice(0, 60)}`);
  return got[1]!;
}

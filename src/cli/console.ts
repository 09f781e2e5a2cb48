import type { Command } from 'commander';
import type { Readable, Writable } from 'node:stream';
import { WebSocket } from 'ws';
import { CLOSE, SUBPROTOCOL, type ServerMessage } from '../console/protocol.js';
import { resolveLogin } from './context.js';

const HELP = 'escapes (after a newline): ~. quit  ~B send BREAK  ~~ send ~  ~? this help';

type EscapeEvent = { send: Buffer } | { action: 'quit' | 'break' | 'help' };

/** ssh-style escapes: `~` is special only right after a newline (or at the start), so it can still be typed. */
export class EscapeFilter {
  private atLineStart = true;
  private tilde = false;

  feed(input: Buffer): EscapeEvent[] {
    const events: EscapeEvent[] = [];
    let run: number[] = [];
    const flush = () => {
      if (run.length) events.push({ send: Buffer.from(run) });
      run = [];
    };
    for (const b of input) {
      if (this.tilde) {
        this.tilde = false;
        const c = String.fromCharCode(b);
        if (c === '.' || c === 'B' || c === '?') {
          flush();
          events.push({ action: c === '.' ? 'quit' : c === 'B' ? 'break' : 'help' });
          if (c === '.') return events;
          continue;
        }
        run.push(0x7e); // `~~` sends one `~`; `~x` sends both
        if (b === 0x7e) {
          this.atLineStart = false;
          continue;
        }
      } else if (this.atLineStart && b === 0x7e) {
        this.tilde = true;
        continue;
      }
      run.push(b);
      this.atLineStart = b === 0x0d || b === 0x0a;
    }
    flush();
    return events;
  }
}

export interface ConsoleClientOptions {
  url: string;
  token: string;
  kind: 'lease' | 'board';
  id: string;
  /** Join watch-only: nothing typed is sent (for support sessions and second screens). */
  watch?: boolean;
  stdin: Readable & { isTTY?: boolean; setRawMode?: (raw: boolean) => unknown };
  stdout: Writable;
  stderr: Writable;
}

export function consoleUrl(base: string, kind: 'lease' | 'board', id: string, watch = false): string {
  const u = new URL(base);
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  u.pathname = `${u.pathname.replace(/\/$/, '')}/v1/${kind === 'lease' ? 'leases' : 'boards'}/${encodeURIComponent(id)}/console`;
  if (watch) u.searchParams.set('watch', '1');
  return u.toString();
}

/** Attaches stdin/stdout to a console until `~.` or the server closes it. Resolves with the exit code. */
export function runConsole(o: ConsoleClientOptions): Promise<number> {
  const note = (s: string) => o.stderr.write(`\r\n[dozen] ${s}\r\n`);
  return new Promise((resolve) => {
    const ws = new WebSocket(consoleUrl(o.url, o.kind, o.id, o.watch), [SUBPROTOCOL], { headers: { authorization: `Bearer ${o.token}` } });
    const esc = new EscapeFilter();
    let me = '';
    let quitting = false;
    let raw = false;
    let done = false;
    let lastError: Error | undefined;
    const finish = (code: number) => {
      if (done) return;
      done = true;
      o.stdin.off('data', onInput);
      o.stdin.pause();
      if (raw) o.stdin.setRawMode?.(false);
      resolve(code);
    };
    const onInput = (chunk: Buffer | string) => {
      for (const ev of esc.feed(Buffer.from(chunk))) {
        if ('send' in ev) ws.send(ev.send);
        else if (ev.action === 'quit') {
          quitting = true;
          ws.close(1000);
          return;
        } else if (ev.action === 'break') ws.send(JSON.stringify({ type: 'break' }));
        else note(HELP);
      }
    };
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c));
      res.on('end', () => {
        let msg = body;
        try {
          msg = (JSON.parse(body) as { error?: string }).error ?? body;
        } catch {
          /* not JSON */
        }
        o.stderr.write(`dozen console: ${res.statusCode} ${msg}\n`);
        ws.terminate();
        finish(1);
      });
    });
    ws.on('error', (err) => (lastError = err)); // 'close' follows and reports it
    ws.on('open', () => {
      if (o.stdin.isTTY && o.stdin.setRawMode) {
        o.stdin.setRawMode(true);
        raw = true;
      }
      o.stdin.on('data', onInput);
      o.stdin.resume();
    });
    ws.on('message', (data, isBinary) => {
      if (isBinary) return void o.stdout.write(data as Buffer);
      const m = JSON.parse(String(data)) as ServerMessage;
      if (m.type === 'state') {
        note(`console ${m.state}${m.lastError ? `: ${m.lastError}` : ''}`);
      } else if (m.event === 'hello') {
        me = m.who ?? '';
        note(`${m.message} — ${HELP}`);
      } else if (!(m.event === 'typing' && m.who === me) && !(m.event === 'join' && m.who === me)) {
        note(m.message);
      }
    });
    ws.on('close', (code, reason) => {
      if (quitting) return finish(0);
      const why = code === CLOSE.tooSlow ? 'this terminal fell behind the console output' : reason.length ? String(reason) : lastError?.message;
      note(`connection closed${why ? `: ${why}` : ''}`);
      finish(1);
    });
  });
}

/** `dozen console [lease]` — registered by the CLI's main module. */
export function consoleCommand(program: Command): Command {
  return program
    .command('console')
    .argument('[lease]', 'lease id')
    .description(`attach to a lease's serial console (${HELP})`)
    .option('--url <url>', 'server URL (default: env DOZEN_URL, then `dozen login`)')
    .option('--token <token>', 'API token (default: env DOZEN_TOKEN, then `dozen login`)')
    .option('--board <id>', "admins: a board's console instead of a lease's")
    .option('--watch', 'watch only: nothing you type is sent')
    .action(async (lease: string | undefined, flags: { url?: string; token?: string; board?: string; watch?: boolean }) => {
      if (!lease && !flags.board) throw new Error('name a lease, or --board <id>');
      const login = await resolveLogin(flags);
      const code = await runConsole({
        url: login.url,
        token: login.token,
        kind: flags.board ? 'board' : 'lease',
        id: flags.board ?? lease!,
        watch: flags.watch,
        stdin: process.stdin,
        stdout: process.stdout,
        stderr: process.stderr,
      });
      process.exit(code);
    });
}

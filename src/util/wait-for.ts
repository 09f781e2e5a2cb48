import type { EventEmitter } from 'node:events';

/**
 * Wait until the text read from a stream matches, or fail with a message that says what was awaited,
 * where, for how long, and the last output seen ("no `login:` after 120 s on lab-1; last output: ...").
 */
export class OutputWatcher {
  private text = '';
  private waiters = new Set<() => void>();
  constructor(source: EventEmitter, private readonly maxKeep = 256 * 1024) {
    source.on('data', (chunk: Buffer | string) => {
      this.text += chunk.toString();
      if (this.text.length > this.maxKeep) this.text = this.text.slice(-this.maxKeep);
      for (const w of this.waiters) w();
    });
  }

  get output(): string {
    return this.text;
  }

  /** Resolves with the match; later waits only look at output after this match. */
  waitFor(pattern: RegExp | string, timeoutMs: number, what: string): Promise<RegExpMatchArray> {
    const re = typeof pattern === 'string' ? new RegExp(pattern.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')) : pattern;
    return new Promise((resolve, reject) => {
      const check = () => {
        const m = re.exec(this.text);
        if (!m) return;
        this.text = this.text.slice(m.index! + m[0].length);
        done();
        resolve(m);
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`no ${re} after ${timeoutMs / 1000} s on ${what}; last output: ${JSON.stringify(this.text.slice(-600))}`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      this.waiters.add(check);
      check();
    });
  }
}

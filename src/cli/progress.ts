import { Transform } from 'node:stream';

/** Where a long transfer is: its phase and bytes (an image import job, or the CLI's own upload). */
export interface ProgressState {
  phase: string;
  bytesDone: number;
  bytesTotal: number | null;
}

export interface ProgressOptions {
  /** A terminal: one bar redrawn in place. Otherwise plain lines, one per phase and at most one per `everyMs`. */
  tty: boolean;
  write: (s: string) => void;
  everyMs?: number;
  now?: () => number;
}

const mb = (n: number) => `${(n / 1e6).toFixed(n < 10e6 ? 1 : 0)} MB`;

/** `phase [#####     ] 50% 5.0 MB / 10.0 MB` (the bar only when the total is known). */
export function progressText(s: ProgressState, width = 30): string {
  const frac = s.bytesTotal ? Math.min(1, s.bytesDone / s.bytesTotal) : 0;
  const bar = s.bytesTotal ? `[${'#'.repeat(Math.round(frac * width)).padEnd(width)}] ${(frac * 100).toFixed(0).padStart(3)}% ` : '';
  return `${s.phase.padEnd(10)} ${bar}${mb(s.bytesDone)}${s.bytesTotal ? ` / ${mb(s.bytesTotal)}` : ''}`;
}

/**
 * Progress on stderr: a bar redrawn with `\r` on a terminal, plain lines elsewhere (logs and pipes get
 * a line when the phase changes, and now and then while it lasts, never a stream of carriage returns).
 */
export class Progress {
  private drawn = false;
  private last?: ProgressState;
  private printed?: ProgressState;
  private printedAt = 0;

  constructor(private readonly o: ProgressOptions) {}

  update(s: ProgressState): void {
    const now = (this.o.now ?? Date.now)();
    if (this.o.tty) {
      this.o.write(`\r  ${progressText(s)}   `);
      this.drawn = true;
    } else if (s.phase !== this.last?.phase) {
      this.flush(); // where the phase that ended got to
      this.line(s, now);
    } else if (now - this.printedAt >= (this.o.everyMs ?? 5000) && s.bytesDone !== this.printed?.bytesDone) {
      this.line(s, now);
    }
    this.last = s;
  }

  /** The end: the bar's line ends (a terminal), or the last state gets its line if it had none. */
  done(): void {
    if (this.drawn) this.o.write('\n');
    this.drawn = false;
    if (!this.o.tty) this.flush();
  }

  private flush(): void {
    if (this.last && this.last !== this.printed) this.line(this.last, this.printedAt);
  }

  private line(s: ProgressState, at: number): void {
    this.o.write(`  ${progressText(s)}\n`);
    this.printed = s;
    this.printedAt = at;
  }
}

/** A pass-through stream that reports the bytes that went through it. */
export function counting(onBytes: (total: number) => void): Transform {
  let total = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      total += chunk.length;
      onBytes(total);
      cb(null, chunk);
    },
  });
}

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { unlink } from 'node:fs/promises';
import { SerialPort } from '../../src/console/serial-port.js';
import { OutputWatcher } from '../../src/util/wait-for.js';
import { until } from '../helpers/until.js';

/**
 * A real pty pair made by socat, reachable through two stable symlinks like a lab board's `<id>.tty`:
 * `line` is what the console server opens, `board` is the "board" end the test drives.
 * stop() kills socat (both ptys vanish, as when QEMU dies); start() makes new ones at the same paths.
 */
export class PtyPair {
  private proc?: ChildProcess;
  constructor(
    readonly line: string,
    readonly board: string,
  ) {}

  async start(): Promise<void> {
    const proc = spawn('socat', [`pty,raw,echo=0,link=${this.board}`, `pty,raw,echo=0,link=${this.line}`], { stdio: 'ignore' });
    this.proc = proc;
    await until('socat making both ptys', () => {
      if (proc.exitCode !== null) throw new Error(`socat exited with ${proc.exitCode}`);
      return existsSync(this.board) && existsSync(this.line);
    }, { timeoutMs: 5000, intervalMs: 20 });
  }

  async stop(): Promise<void> {
    const p = this.proc;
    this.proc = undefined;
    if (p && p.exitCode === null) {
      await new Promise<void>((r) => {
        p.once('exit', () => r());
        p.kill('SIGKILL');
      });
    }
    // SIGKILL leaves socat's links dangling; the lab relinks the same way when QEMU restarts.
    await Promise.all([unlink(this.line).catch(() => {}), unlink(this.board).catch(() => {})]);
  }

  /** Open the board end (no lock: the test is the board, not a competing console reader). */
  async openBoard(): Promise<{ port: SerialPort; out: OutputWatcher; received: () => Buffer; close: () => Promise<void> }> {
    const port = new SerialPort({ path: this.board, baudRate: 115200, lock: false });
    await port.asyncOpen();
    const chunks: Buffer[] = [];
    port.on('data', (c: Buffer) => chunks.push(c));
    return { port, out: new OutputWatcher(port), received: () => Buffer.concat(chunks), close: () => port.asyncClose() };
  }
}

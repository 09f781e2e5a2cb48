import { Duplex } from 'node:stream';

/**
 * A container's TTY as a byte stream, shaped like a board's serial console: write keystrokes,
 * read output ('data'), end() to detach (the container keeps running), resize(cols, rows).
 */
export class ContainerConsole extends Duplex {
  constructor(
    private readonly socket: NodeJS.ReadWriteStream & { destroy?: (err?: Error) => void },
    private readonly resizer: (cols: number, rows: number) => Promise<void>,
  ) {
    super();
    socket.on('data', (chunk: Buffer) => {
      if (!this.push(chunk)) socket.pause();
    });
    socket.on('end', () => this.push(null));
    socket.on('close', () => this.push(null));
    socket.on('error', (err: Error) => this.destroy(err));
  }

  override _read(): void {
    this.socket.resume();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.socket.write(chunk, (err?: Error | null) => cb(err));
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.socket.end();
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.socket.destroy?.();
    cb(err);
  }

  /** Sets the TTY's size (the shell gets SIGWINCH). */
  resize(cols: number, rows: number): Promise<void> {
    return this.resizer(cols, rows);
  }
}

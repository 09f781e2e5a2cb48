import { SerialPort as SerialPortStream } from 'serialport';
import { hangupAware } from './hangup-binding.js';

/** The native binding, made to report a hung-up tty (see hangup-binding.ts). */
const NATIVE = hangupAware(SerialPortStream.binding);

/** An OS binding as serialport takes it (structurally @serialport/bindings-interface's BindingInterface). */
export interface SerialBinding {
  open(options: never): Promise<unknown>;
  list(): Promise<unknown[]>;
}

export interface SerialPortOptions {
  path: string;
  baudRate: number;
  /** flock the device so a second reader cannot silently steal half the bytes (default true). */
  lock?: boolean;
  /** The OS binding; tests and odd hosts may inject another (zigbee-herdsman's pattern). Default: the native one. */
  binding?: SerialBinding;
}

type SetFlags = { brk?: boolean; dtr?: boolean; rts?: boolean; cts?: boolean };

/**
 * The only module that touches `serialport`: its callback API turned into promises, the binding injectable.
 * Everything else in the console works on these methods.
 */
export class SerialPort extends SerialPortStream {
  constructor(o: SerialPortOptions) {
    const { binding, ...rest } = o;
    // `serialport` spreads our options over its own defaults, so a given `binding` replaces the native one.
    super({ autoOpen: false, ...rest, binding: binding ?? NATIVE } as ConstructorParameters<typeof SerialPortStream>[0]);
  }

  asyncOpen(): Promise<void> {
    return new Promise((res, rej) => this.open((err) => (err ? rej(err) : res())));
  }

  /** Resolves also when the port is already closed (closing is what callers want, not an error). */
  asyncClose(): Promise<void> {
    if (!this.isOpen) return Promise.resolve();
    return new Promise((res) => this.close(() => res()));
  }

  /** Resolves once the bytes are handed to the OS. */
  asyncWrite(bytes: Uint8Array): Promise<void> {
    // serialport would hold the bytes until the port opens again, which a hung-up line never does.
    if (!this.isOpen) return Promise.reject(new Error(`${this.path}: port is not open`));
    return new Promise((res, rej) => {
      this.write(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), (err) => (err ? rej(err) : res()));
    });
  }

  asyncSet(flags: SetFlags): Promise<void> {
    return new Promise((res, rej) => this.set(flags, (err) => (err ? rej(err) : res())));
  }

  /** Hold the line in BREAK for `ms` (Linux's SysRq wants a break; 250 ms is what `tcsendbreak` uses). */
  async asyncBreak(ms = 250): Promise<void> {
    await this.asyncSet({ brk: true });
    await new Promise((r) => setTimeout(r, ms));
    await this.asyncSet({ brk: false });
  }
}

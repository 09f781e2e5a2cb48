import { EventEmitter } from 'node:events';
import { SerialPort, type SerialPortOptions } from './serial-port.js';
import type { Connector, Transport, TransportEvents } from './source.js';

/** Local serial devices: USB-serial adapters, /dev/serial/by-id/* links, ptys (the lab's QEMU boards). */
export function serialConnector(o: SerialPortOptions & { breakMs?: number }): Connector {
  return {
    target: `${o.path} @${o.baudRate}`,
    async connect() {
      const port = new SerialPort(o);
      await port.asyncOpen();
      return new SerialTransport(port, o.breakMs);
    },
  };
}

class SerialTransport extends EventEmitter<TransportEvents> implements Transport {
  private gone = false;
  constructor(
    private readonly port: SerialPort,
    private readonly breakMs?: number,
  ) {
    super();
    port.on('data', (chunk: Buffer) => this.emit('data', chunk));
    // serialport closes the port itself on a read/write error (EIO when a pty's other end goes, ENXIO on unplug).
    port.on('close', (err: Error | null) => this.lost(err ?? new Error('port closed')));
    port.on('error', (err: Error) => {
      this.lost(err);
      void port.asyncClose();
    });
  }

  write(bytes: Uint8Array): Promise<void> {
    return this.port.asyncWrite(bytes);
  }

  sendBreak(): Promise<void> {
    return this.port.asyncBreak(this.breakMs);
  }

  async close(): Promise<void> {
    this.gone = true;
    await this.port.asyncClose();
    this.port.removeAllListeners('data');
  }

  private lost(err: Error): void {
    if (this.gone) return;
    this.gone = true;
    this.emit('disconnected', new Error(`${this.port.path}: ${err.message}`, { cause: err }));
  }
}

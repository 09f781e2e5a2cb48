import { read as fsRead } from 'node:fs';
import { promisify } from 'node:util';
import type { SerialBinding } from './serial-port.js';

const readAsync = promisify(fsRead);

/** What this module needs of a serialport OS binding and of the port it opens (bindings-cpp's unix ports). */
interface UnixPort {
  fd: number | null;
  isOpen: boolean;
  poller?: { once(event: 'readable', cb: (err?: Error | null) => void): unknown };
  read(buffer: Buffer, offset: number, length: number): Promise<{ bytesRead: number; buffer: Buffer }>;
}

/**
 * Wraps a serialport binding so that a tty hung up under us (a pty whose QEMU died, a USB adapter
 * gone) is reported as a disconnect instead of being read forever.
 *
 * Why: once a pty's master closes, the kernel hangs up the slave and every read() returns 0. The
 * stock unix read retries a 0-byte read at once, so when the read happens after the hangup (rather
 * than waking with EIO during it) the port spins on empty reads and never says it is gone. With
 * VMIN=1 (serialport's default) a tty read returns 0 only when hung up, so 0 here means "gone".
 */
export function hangupAware<B extends SerialBinding>(base: B): B {
  return {
    ...base,
    list: () => base.list(),
    async open(options: never) {
      const port = (await base.open(options)) as UnixPort;
      if (!port.poller || typeof port.fd !== 'number') return port; // not a unix fd port: leave it alone
      port.read = (buffer, offset, length) => readOrHangup(port, buffer, offset, length);
      return port;
    },
  } as B;
}

async function readOrHangup(port: UnixPort, buffer: Buffer, offset: number, length: number): Promise<{ bytesRead: number; buffer: Buffer }> {
  for (;;) {
    if (!port.isOpen || port.fd === null) throw Object.assign(new Error('Port is not open'), { canceled: true });
    try {
      const { bytesRead } = await readAsync(port.fd, buffer, offset, length, null);
      if (bytesRead === 0) throw Object.assign(new Error('hung up (read returned end of file)'), { code: 'EOF', disconnect: true });
      return { bytesRead, buffer };
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'EAGAIN' && code !== 'EWOULDBLOCK' && code !== 'EINTR') throw err;
      // Closed while that read was in flight: the poller is destroyed, and waiting on it crashes the
      // process (a segfault in Poller::poll, test/console/source.contract.test.ts found it).
      if (!port.isOpen || port.fd === null) throw Object.assign(new Error('Port is not open'), { canceled: true });
      // Nothing to read yet: wait for the poller (it also wakes, with an error, on hangup).
      await new Promise<void>((res, rej) => port.poller!.once('readable', (e) => (e ? rej(e) : res())));
    }
  }
}

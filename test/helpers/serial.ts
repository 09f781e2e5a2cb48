import { SerialPort } from 'serialport';
import { OutputWatcher } from '../../src/util/wait-for.js';

/** Open a board's serial line (a lab pty, through serialport as for real boards) and watch its output. */
export async function openConsole(path: string): Promise<{ port: SerialPort; out: OutputWatcher; type: (s: string) => Promise<void>; close: () => Promise<void> }> {
  const port = new SerialPort({ path, baudRate: 115200, autoOpen: false });
  await new Promise<void>((res, rej) => port.open((err) => (err ? rej(err) : res())));
  const out = new OutputWatcher(port);
  return {
    port,
    out,
    // Type slowly: the emulated UART has a tiny FIFO and TCG boards are slow to drain it.
    type: async (s: string) => {
      for (const ch of s) {
        port.write(ch);
        await new Promise((r) => setTimeout(r, 15));
      }
    },
    close: () => new Promise<void>((res) => (port.isOpen ? port.close(() => res()) : res())),
  };
}

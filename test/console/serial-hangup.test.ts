import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SerialPort } from '../../src/console/serial-port.js';
import { serialConnector } from '../../src/console/serial-transport.js';
import { requireTools } from '../helpers/tools.js';
import { until } from '../helpers/until.js';
import { PtyPair } from './pty-pair.js';

// Real ptys (socat) and the native serialport binding: when the far end of a pty dies (QEMU killed),
// the kernel hangs the line up and the console must notice, whatever it was doing at that moment.
let dir: string;
beforeAll(() => {
  requireTools('socat');
  dir = mkdtempSync(join(tmpdir(), 'serial-hangup-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const closed = (port: SerialPort, ms: number) =>
  new Promise<Error | null | 'still open'>((res) => {
    const t = setTimeout(() => res('still open'), ms);
    port.once('close', (err: Error | null) => {
      clearTimeout(t);
      res(err);
    });
  });

describe('a serial line whose other end hangs up', () => {
  it('reports the disconnect when the first read comes after the hangup (a read then returns 0 forever)', async () => {
    const pair = new PtyPair(join(dir, 'a.tty'), join(dir, 'a-board.tty'));
    await pair.start();
    const port = new SerialPort({ path: pair.line, baudRate: 115200, lock: false });
    try {
      await port.asyncOpen();
      await pair.stop(); // hung up before anyone reads
      const gone = closed(port, 5000);
      port.on('data', () => {}); // starts reading now
      const err = await gone;
      expect(err).toBeInstanceOf(Error);
      expect((err as Error).message).toMatch(/hung up/);
      expect(port.isOpen).toBe(false);
    } finally {
      await port.asyncClose();
    }
  });

  it('the transport says "disconnected" every time, whenever the far end dies (20 rounds)', async () => {
    for (let i = 0; i < 20; i++) {
      const pair = new PtyPair(join(dir, `b${i}.tty`), join(dir, `b${i}-board.tty`));
      await pair.start();
      const t = await serialConnector({ path: pair.line, baudRate: 115200, lock: false }).connect();
      try {
        const said = new Promise<string>((res) => {
          const timer = setTimeout(() => res('nothing within 5 s'), 5000);
          t.on('disconnected', (e: Error) => {
            clearTimeout(timer);
            res(`disconnected: ${e.message}`);
          });
        });
        // Some rounds die while a read waits on the poller, some while bytes are in flight.
        if (i % 2) {
          const b = await pair.openBoard();
          await b.port.asyncWrite(Buffer.alloc(4096, 0x41));
        }
        await pair.stop();
        expect(await said, `round ${i}`).toMatch(/^disconnected: /);
      } finally {
        await t.close();
      }
    }
  });

  it('a live line is not mistaken for a hung-up one: bytes arrive after a silence', async () => {
    const pair = new PtyPair(join(dir, 'c.tty'), join(dir, 'c-board.tty'));
    await pair.start();
    const t = await serialConnector({ path: pair.line, baudRate: 115200, lock: false }).connect();
    const b = await pair.openBoard();
    try {
      let lost: Error | undefined;
      t.on('disconnected', (e: Error) => (lost = e));
      const got: Buffer[] = [];
      t.on('data', (c: Buffer) => got.push(c));
      await b.port.asyncWrite(Buffer.from('one\n'));
      // A fixed silence on purpose: it is what is tested (no event marks "quiet long enough"); a line that
      // took a quiet read for a hangup would report it in this time.
      await new Promise((r) => setTimeout(r, 500));
      await b.port.asyncWrite(Buffer.from('two\n'));
      await until('the bytes after the silence', () => Buffer.concat(got).toString().includes('two'), {
        timeoutMs: 5000,
        intervalMs: 20,
        detail: () => `got ${JSON.stringify(Buffer.concat(got).toString())}${lost ? `; disconnected: ${lost.message}` : ''}`,
      });
      expect(Buffer.concat(got).toString()).toBe('one\ntwo\n');
      expect(lost).toBeUndefined();
    } finally {
      await b.close();
      await t.close();
      await pair.stop();
    }
  });
});

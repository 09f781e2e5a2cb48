import { describe, expect, it } from 'vitest';
import {
  decode,
  encodeAck,
  encodeData,
  encodeError,
  encodeOack,
  encodeRrq,
  encodeWrq,
} from '../../src/boot/tftp/packet.js';

const ok = (b: Buffer) => {
  const r = decode(b);
  if (!r.ok) throw new Error(`expected ok, got ${r.error.reason}`);
  return r.packet;
};
const bad = (b: Buffer) => {
  const r = decode(b);
  if (r.ok) throw new Error(`expected malformed, got ${r.packet.type}`);
  return r.error.reason;
};

describe('tftp packet codec', () => {
  it('round-trips every packet type', () => {
    expect(ok(encodeRrq('pxelinux.0', 'octet', { blksize: 1468, TSize: 0 }))).toEqual({
      type: 'rrq',
      filename: 'pxelinux.0',
      mode: 'octet',
      options: Object.assign(Object.create(null), { blksize: '1468', tsize: '0' }),
    });
    expect(ok(encodeWrq('x', 'NetASCII'))).toMatchObject({ type: 'wrq', filename: 'x', mode: 'netascii' });
    const d = ok(encodeData(70000, Buffer.from('abc')));
    expect(d).toMatchObject({ type: 'data', block: 70000 & 0xffff });
    expect(d.type === 'data' && d.data.toString()).toBe('abc');
    expect(ok(encodeData(7, Buffer.alloc(0)))).toMatchObject({ type: 'data', block: 7 });
    expect(ok(encodeAck(65535))).toEqual({ type: 'ack', block: 65535 });
    expect(ok(encodeAck(65536))).toEqual({ type: 'ack', block: 0 }); // rollover
    expect(ok(encodeError(2, 'Access violation'))).toEqual({ type: 'error', code: 2, message: 'Access violation' });
    expect(ok(encodeOack({ blksize: 512, tsize: 10 }))).toMatchObject({ type: 'oack', options: { blksize: '512', tsize: '10' } });
  });

  it('returns typed errors for malformed input instead of throwing', () => {
    expect(bad(Buffer.alloc(0))).toBe('short');
    expect(bad(Buffer.from([0]))).toBe('short');
    expect(bad(Buffer.from([0, 9, 1, 2]))).toBe('bad-opcode');
    expect(bad(Buffer.from([0, 1]))).toBe('unterminated');
    expect(bad(Buffer.from('\x00\x01file\x00octet', 'latin1'))).toBe('unterminated');
    expect(bad(Buffer.from('\x00\x01file\x00', 'latin1'))).toBe('unterminated');
    expect(bad(Buffer.from('\x00\x01\x00octet\x00', 'latin1'))).toBe('empty-field');
    expect(bad(Buffer.from('\x00\x01f\x00octet\x00blksize\x00', 'latin1'))).toBe('odd-options');
    expect(bad(Buffer.from('\x00\x01f\x00octet\x00\x001\x00', 'latin1'))).toBe('empty-field');
    expect(bad(Buffer.from([0, 1, 0xff, 0xfe, 0, 0x6f, 0]))).toBe('bad-encoding');
    expect(bad(Buffer.from([0, 3, 1]))).toBe('short');
    expect(bad(Buffer.from([0, 4, 0]))).toBe('bad-length');
    expect(bad(Buffer.from([0, 4, 0, 1, 0]))).toBe('bad-length');
    expect(bad(Buffer.from([0, 5, 0]))).toBe('short');
    expect(bad(Buffer.from('\x00\x06blksize\x00', 'latin1'))).toBe('odd-options');
  });

  it('keeps "__proto__" as a plain option name and lets the first duplicate win', () => {
    const p = ok(Buffer.from('\x00\x01f\x00octet\x00__proto__\x00x\x00blksize\x00100\x00BLKSIZE\x00200\x00', 'latin1'));
    expect(p.type === 'rrq' && p.options.blksize).toBe('100');
    expect(p.type === 'rrq' && Object.getPrototypeOf(p.options)).toBe(null);
    expect(p.type === 'rrq' && p.options['__proto__']).toBe('x');
  });

  it('accepts an ERROR without terminator (honour errors from sloppy peers)', () => {
    expect(ok(Buffer.from('\x00\x05\x00\x01gone', 'latin1'))).toEqual({ type: 'error', code: 1, message: 'gone' });
  });

  it('never throws on random bytes', () => {
    let seed = 12345;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 16) & 0xff;
    for (let i = 0; i < 20000; i++) {
      const b = Buffer.alloc(rnd() % 40);
      for (let j = 0; j < b.length; j++) b[j] = rnd();
      if (b.length > 1 && i % 2) b[0] = 0; // half with a plausible opcode high byte
      if (b.length > 1 && i % 2) b[1] = (b[1]! % 7) + 0;
      expect(() => decode(b)).not.toThrow();
    }
  });

  it('refuses to encode strings with NUL', () => {
    expect(() => encodeRrq('a\x00b')).toThrow(TypeError);
  });
});

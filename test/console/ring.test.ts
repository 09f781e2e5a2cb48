/** RingBuffer (src/console/ring.ts): nothing of the last tenant's output stays in memory; a quiet board holds no buffer. */
import { describe, expect, it } from 'vitest';
import { RingBuffer } from '../../src/console/ring.js';

const memory = (r: RingBuffer) => (r as unknown as { buf: Buffer | null }).buf!;
const zeroed = (b: Buffer) => b.every((x) => x === 0);

describe('RingBuffer.clear', () => {
  it('zeroes every byte a tenant wrote, wrapped or not, and the ring works after', () => {
    const r = new RingBuffer(64);
    r.write(Buffer.alloc(10, 0xaa));
    r.clear();
    expect(zeroed(memory(r))).toBe(true);
    expect(r.snapshot().length).toBe(0);

    for (let i = 0; i < 7; i++) r.write(Buffer.alloc(23, 0xbb + i)); // wraps: the window starts mid-buffer
    r.clear();
    expect(zeroed(memory(r))).toBe(true);

    r.write(Buffer.alloc(100, 0xcc)); // larger than the ring
    r.clear();
    expect(zeroed(memory(r))).toBe(true);

    r.write(Buffer.from('next tenant'));
    expect(r.snapshot().toString()).toBe('next tenant');
  });
});

describe('RingBuffer memory', () => {
  it('is made at the first byte: a quiet board (a rack of 1,000 at start-up) holds none, and reads and clears as empty', () => {
    const r = new RingBuffer(1 << 20);
    expect((r as unknown as { buf: Buffer | null }).buf).toBeNull();
    expect(r.snapshot().length).toBe(0);
    r.clear();
    r.write(Buffer.alloc(0));
    expect((r as unknown as { buf: Buffer | null }).buf).toBeNull();
    r.write(Buffer.from('U-Boot'));
    expect(memory(r).length).toBe(1 << 20);
    expect([r.snapshot().toString(), r.total]).toEqual(['U-Boot', 6]);
  });
});

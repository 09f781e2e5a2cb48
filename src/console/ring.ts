/** The last `capacity` bytes of a stream, in one preallocated buffer: scrollback costs the same at any uptime. */
export class RingBuffer {
  private readonly buf: Buffer;
  private start = 0;
  private length = 0;
  /** Bytes ever written, so a viewer can be told how much scrolled out of reach. */
  total = 0;

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity <= 0) throw new Error(`scrollback size must be a positive integer, not ${capacity}`);
    this.buf = Buffer.alloc(capacity);
  }

  write(chunk: Uint8Array): void {
    this.total += chunk.length;
    if (chunk.length >= this.capacity) {
      this.buf.set(chunk.subarray(chunk.length - this.capacity));
      this.start = 0;
      this.length = this.capacity;
      return;
    }
    const end = (this.start + this.length) % this.capacity;
    const first = Math.min(chunk.length, this.capacity - end);
    this.buf.set(chunk.subarray(0, first), end);
    this.buf.set(chunk.subarray(first), 0);
    const overflow = Math.max(0, this.length + chunk.length - this.capacity);
    this.start = (this.start + overflow) % this.capacity;
    this.length = Math.min(this.capacity, this.length + chunk.length);
  }

  /** Forget every retained byte (a new tenant must not read the last one's output). */
  clear(): void {
    // Only the retained bytes can be non-zero (writes land inside the window, and every clear zeroes
    // it), so zeroing them leaves nothing of the last tenant: a quiet board's clear costs nothing.
    const tail = Math.min(this.length, this.capacity - this.start);
    this.buf.fill(0, this.start, this.start + tail);
    this.buf.fill(0, 0, this.length - tail);
    this.start = 0;
    this.length = 0;
  }

  /** A copy of the retained bytes, oldest first. */
  snapshot(): Buffer {
    const tail = Math.min(this.length, this.capacity - this.start);
    return Buffer.concat([this.buf.subarray(this.start, this.start + tail), this.buf.subarray(0, this.length - tail)]);
  }
}

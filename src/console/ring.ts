/**
 * The last `capacity` bytes of a stream, in one buffer: scrollback costs the same at any uptime. The
 * buffer is made at the first byte, so a rack of quiet boards costs neither memory nor start-up time.
 */
export class RingBuffer {
  private buf: Buffer | null = null;
  private start = 0;
  private length = 0;
  /** Bytes ever written, so a viewer can be told how much scrolled out of reach. */
  total = 0;

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity <= 0) throw new Error(`scrollback size must be a positive integer, not ${capacity}`);
  }

  write(chunk: Uint8Array): void {
    if (!chunk.length) return;
    this.total += chunk.length;
    const buf = (this.buf ??= Buffer.alloc(this.capacity));
    if (chunk.length >= this.capacity) {
      buf.set(chunk.subarray(chunk.length - this.capacity));
      this.start = 0;
      this.length = this.capacity;
      return;
    }
    const end = (this.start + this.length) % this.capacity;
    const first = Math.min(chunk.length, this.capacity - end);
    buf.set(chunk.subarray(0, first), end);
    buf.set(chunk.subarray(first), 0);
    const overflow = Math.max(0, this.length + chunk.length - this.capacity);
    this.start = (this.start + overflow) % this.capacity;
    this.length = Math.min(this.capacity, this.length + chunk.length);
  }

  /** Forget every retained byte (a new tenant must not read the last one's output). */
  clear(): void {
    // Only the retained bytes can be non-zero (writes land inside the window, and every clear zeroes
    // it), so zeroing them leaves nothing of the last tenant: a quiet board's clear costs nothing.
    if (!this.buf) return;
    const tail = Math.min(this.length, this.capacity - this.start);
    this.buf.fill(0, this.start, this.start + tail);
    this.buf.fill(0, 0, this.length - tail);
    this.start = 0;
    this.length = 0;
  }

  /** A copy of the retained bytes, oldest first. */
  snapshot(): Buffer {
    if (!this.buf) return Buffer.alloc(0);
    const tail = Math.min(this.length, this.capacity - this.start);
    return Buffer.concat([this.buf.subarray(this.start, this.start + tail), this.buf.subarray(0, this.length - tail)]);
  }
}

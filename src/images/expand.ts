import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, stat, type FileHandle } from 'node:fs/promises';
import { Transform, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { createGunzip } from 'node:zlib';
import { BadRequestError } from '../util/errors.js';

const run = promisify(execFile);

export const DISK_FORMATS = ['raw', 'xz', 'gz', 'zst', 'qcow2'] as const;
export type DiskFormat = (typeof DISK_FORMATS)[number];

/** The container format of a disk image file, from its magic bytes; anything unrecognised is raw. */
export function sniffFormat(head: Buffer): DiskFormat {
  const hex = head.subarray(0, 6).toString('hex');
  if (hex === 'fd377a585a00') return 'xz';
  if (hex.startsWith('1f8b')) return 'gz';
  if (hex.startsWith('28b52ffd')) return 'zst';
  if (hex.startsWith('514649fb')) return 'qcow2'; // "QFI\xfb"
  return 'raw';
}

export async function readHead(file: string, n = 4096): Promise<Buffer> {
  const fh = await open(file, 'r');
  try {
    const buf = Buffer.alloc(n);
    const { bytesRead } = await fh.read(buf, 0, n, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

export async function sha256File(file: string, onBytes?: (n: number) => void): Promise<string> {
  const hash = createHash('sha256');
  let n = 0;
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) {
    hash.update(chunk as Buffer);
    onBytes?.((n += (chunk as Buffer).length));
  }
  return hash.digest('hex');
}

export interface ExpandOptions {
  /** Input bytes consumed so far (progress is measured on the file as given: compressed bytes). */
  onBytes: (n: number) => void;
  /** Refuse a disk that expands past this many bytes (a decompression bomb, or the wrong file). */
  maxBytes: number;
}

/**
 * Turn a disk image file (raw, xz, gzip, zstd or qcow2) into a sparse raw disk at `dest`.
 * Returns the SHA-256 of the input (for stream formats; null for qcow2, which qemu-img reads itself)
 * and the raw size. Bad input (corrupt or truncated archive, invalid qcow2) is a BadRequestError.
 */
export async function expandDisk(src: string, format: DiskFormat, dest: string, o: ExpandOptions): Promise<{ sha256: string | null; size: number }> {
  if (format === 'qcow2') return { sha256: null, size: await convertQcow2(src, dest, o) };
  const hash = createHash('sha256');
  let n = 0;
  const meter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      o.onBytes((n += chunk.length));
      cb(null, chunk);
    },
  });
  const writer = new SparseFileWriter(dest, o.maxBytes);
  const input = createReadStream(src, { highWaterMark: 1 << 20 });
  if (format === 'raw') await pipeline(input, meter, writer);
  else if (format === 'gz') {
    await pipeline(input, meter, createGunzip(), writer).catch((err: NodeJS.ErrnoException) => {
      // zlib's errors (Z_BUF_ERROR "unexpected end of file", Z_DATA_ERROR) are the input's fault.
      throw String(err.code).startsWith('Z_') ? new BadRequestError(`corrupt or truncated gzip file: ${err.message}`) : err;
    });
  } else await viaTool(format, format === 'xz' ? ['xz', '-dc', '-T0'] : ['zstd', '-dc', '-q'], input, meter, writer);
  return { sha256: hash.digest('hex'), size: writer.size };
}

/** xz and zstd through their command-line tools (Node has neither); their stderr becomes the error. */
async function viaTool(format: DiskFormat, cmd: string[], input: NodeJS.ReadableStream, meter: Transform, writer: SparseFileWriter): Promise<void> {
  const child = spawn(cmd[0]!, cmd.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((res, rej) => {
    child.once('error', (err) => rej(new Error(`cannot run ${cmd[0]}: ${err.message}`, { cause: err })));
    child.once('close', (code) => res(code));
  });
  const feed = pipeline(input, meter, child.stdin).catch((err) => {
    // EPIPE: the tool stopped reading (it found an error, reported on its stderr).
    if ((err as NodeJS.ErrnoException).code !== 'EPIPE') throw err;
  });
  const drain = pipeline(child.stdout, writer).catch((err) => {
    child.kill('SIGKILL');
    throw err;
  });
  const [code] = await Promise.all([exited, feed, drain]);
  if (code !== 0) {
    const why = stderr.trim().replace(/^\S+: \(stdin\): /, '') || `${cmd[0]} exited with ${code}`;
    throw new BadRequestError(`corrupt or truncated ${format} file: ${why}`);
  }
}

async function convertQcow2(src: string, dest: string, o: ExpandOptions): Promise<number> {
  let info: {
    format?: string;
    'virtual-size'?: number;
    'backing-filename'?: string;
    'full-backing-filename'?: string;
    'format-specific'?: { data?: { corrupt?: boolean; 'data-file'?: string } };
  };
  try {
    const { stdout } = await run('qemu-img', ['info', '--output=json', '-f', 'qcow2', src]);
    info = JSON.parse(stdout);
  } catch (err) {
    throw new BadRequestError(`not a valid qcow2 image: ${((err as { stderr?: string }).stderr ?? (err as Error).message).trim()}`);
  }
  // A backing file or an external data file would make qemu-img read host files (another lease's disk,
  // /dev/sda) into every disk made from this image: refused, whatever the path says.
  if (info['backing-filename'] || info['full-backing-filename']) {
    throw new BadRequestError('the qcow2 image has a backing file: import a self-contained image (qemu-img convert -O qcow2 without -B, or raw)');
  }
  if (info['format-specific']?.data?.['data-file']) {
    throw new BadRequestError('the qcow2 image keeps its data in an external data file: import a self-contained image');
  }
  const size = info['virtual-size'] ?? 0;
  if (info['format-specific']?.data?.corrupt) throw new BadRequestError('the qcow2 image is marked corrupt');
  if (size > o.maxBytes) throw new BadRequestError(`the qcow2 disk is ${size} bytes, more than the limit of ${o.maxBytes}`);
  // A truncated qcow2 converts "fine", its missing clusters read as zeros: check the metadata first.
  // Exit 2: corruptions; 3: leaked clusters only (harmless for reading).
  let check: { corruptions?: number; 'check-errors'?: number } = {};
  let checkErr = '';
  try {
    check = JSON.parse((await run('qemu-img', ['check', '--output=json', '-f', 'qcow2', src])).stdout);
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    checkErr = (e.stderr ?? '').trim().split('\n').slice(0, 3).join('; ');
    try {
      check = JSON.parse(e.stdout ?? '');
    } catch {
      check = { 'check-errors': 1 };
    }
  }
  if (check.corruptions || check['check-errors']) {
    throw new BadRequestError(
      `the qcow2 image is corrupt or truncated (qemu-img check: ${check.corruptions ?? 0} corruptions, ${check['check-errors'] ?? 0} errors${checkErr ? `: ${checkErr}` : ''})`,
    );
  }
  const total = (await stat(src)).size || 1;
  // qemu-img writes a sparse raw file itself; -p prints "(12.34/100%)" as it goes.
  const child = spawn('qemu-img', ['convert', '-p', '-f', 'qcow2', '-O', 'raw', src, dest], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  child.stdout.on('data', (d: Buffer) => {
    const pcts = [...d.toString().matchAll(/\((\d+(?:\.\d+)?)\/100%\)/g)];
    const last = pcts.at(-1);
    if (last) o.onBytes(Math.round((Number(last[1]) / 100) * total));
  });
  const code = await new Promise<number | null>((res, rej) => {
    child.once('error', (err) => rej(new Error(`cannot run qemu-img: ${err.message}`, { cause: err })));
    child.once('close', res);
  });
  if (code !== 0) throw new BadRequestError(`qemu-img could not convert the qcow2 image (corrupt or truncated?): ${stderr.trim()}`);
  o.onBytes(total);
  return size;
}

const BLOCK = 1 << 20;
const SUB = 64 * 1024;
const ZERO = Buffer.alloc(SUB);

/**
 * Writes a stream to a file, skipping all-zero 64 KiB runs (leaving holes), then sets the length:
 * a 1.5 GiB disk that is mostly empty costs its used blocks on the host, not 1.5 GiB.
 */
export class SparseFileWriter extends Writable {
  private fh: FileHandle | null = null;
  private pos = 0;
  private pending: Buffer[] = [];
  private pendingLen = 0;

  constructor(
    private readonly path: string,
    private readonly maxBytes: number,
  ) {
    super({ highWaterMark: BLOCK });
  }

  get size(): number {
    return this.pos;
  }

  override _construct(cb: (err?: Error | null) => void): void {
    open(this.path, 'w').then((fh) => ((this.fh = fh), cb()), cb);
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.take(chunk).then(() => cb(), cb);
  }

  override _final(cb: (err?: Error | null) => void): void {
    (async () => {
      if (this.pendingLen) await this.flush(Buffer.concat(this.pending, this.pendingLen));
      await this.fh!.truncate(this.pos);
      await this.fh!.close();
      this.fh = null;
    })().then(() => cb(), cb);
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    const fh = this.fh;
    this.fh = null;
    (fh ? fh.close() : Promise.resolve()).then(() => cb(err), () => cb(err));
  }

  private async take(chunk: Buffer): Promise<void> {
    if (this.pos + this.pendingLen + chunk.length > this.maxBytes) {
      throw new BadRequestError(`the disk image expands to more than the limit of ${this.maxBytes} bytes`);
    }
    this.pending.push(chunk);
    this.pendingLen += chunk.length;
    if (this.pendingLen < BLOCK) return;
    const all = Buffer.concat(this.pending, this.pendingLen);
    const whole = all.length - (all.length % BLOCK);
    await this.flush(all.subarray(0, whole));
    this.pending = whole < all.length ? [all.subarray(whole)] : [];
    this.pendingLen = all.length - whole;
  }

  private async flush(buf: Buffer): Promise<void> {
    for (let off = 0; off < buf.length; off += SUB) {
      const part = buf.subarray(off, Math.min(off + SUB, buf.length));
      if (!part.equals(part.length === SUB ? ZERO : ZERO.subarray(0, part.length))) {
        await this.fh!.write(part, 0, part.length, this.pos + off);
      }
    }
    this.pos += buf.length;
  }
}

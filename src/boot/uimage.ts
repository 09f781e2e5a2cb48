import { crc32 } from 'node:zlib';

// U-Boot legacy image header (include/image.h): 64 bytes, big-endian.
const IH_MAGIC = 0x27051956;
const IH_OS_LINUX = 5;
const IH_ARCH_ARM = 2;
const IH_TYPE_SCRIPT = 6;
const IH_COMP_NONE = 0;
const HEADER_SIZE = 64;
const NAME_SIZE = 32;

export interface ScriptImageOptions {
  name?: string;
  /** Seconds since the epoch stored in the header; fixed values make output reproducible. */
  time?: number;
}

/**
 * Encode a U-Boot script image, byte-identical to `mkimage -A arm -O linux -T script -C none -d file`.
 * A script image is a multi-file image with one part: a table of part lengths ended by 0, then the
 * part itself (mkimage pads parts to 4 bytes only between parts, so a single part is not padded).
 */
export function encodeScriptImage(script: string, opts: ScriptImageOptions = {}): Buffer {
  const body = Buffer.from(script, 'utf8');
  const table = Buffer.alloc(8);
  table.writeUInt32BE(body.length, 0);
  const data = Buffer.concat([table, body]);

  const header = Buffer.alloc(HEADER_SIZE);
  header.writeUInt32BE(IH_MAGIC, 0);
  header.writeUInt32BE(opts.time ?? Math.floor(Date.now() / 1000), 8);
  header.writeUInt32BE(data.length, 12);
  header.writeUInt32BE(0, 16); // load address
  header.writeUInt32BE(0, 20); // entry point
  header.writeUInt32BE(crc32(data), 24);
  header.writeUInt8(IH_OS_LINUX, 28);
  header.writeUInt8(IH_ARCH_ARM, 29);
  header.writeUInt8(IH_TYPE_SCRIPT, 30);
  header.writeUInt8(IH_COMP_NONE, 31);
  const name = Buffer.from(opts.name ?? '', 'utf8').subarray(0, NAME_SIZE);
  name.copy(header, 32);
  header.writeUInt32BE(crc32(header), 4); // header CRC is computed with its own field zero
  return Buffer.concat([header, data]);
}

/** Decode and verify a script image; the inverse of encodeScriptImage (used by tests and tools). */
export function decodeScriptImage(img: Buffer): { name: string; time: number; script: string } {
  if (img.length < HEADER_SIZE + 8) throw new Error('image too short');
  if (img.readUInt32BE(0) !== IH_MAGIC) throw new Error('bad magic');
  const header = Buffer.from(img.subarray(0, HEADER_SIZE));
  const hcrc = header.readUInt32BE(4);
  header.writeUInt32BE(0, 4);
  if (crc32(header) !== hcrc) throw new Error('bad header CRC');
  const size = img.readUInt32BE(12);
  const data = img.subarray(HEADER_SIZE, HEADER_SIZE + size);
  if (data.length !== size || crc32(data) !== img.readUInt32BE(24)) throw new Error('bad data CRC');
  if (img.readUInt8(30) !== IH_TYPE_SCRIPT) throw new Error('not a script image');
  const len = data.readUInt32BE(0);
  const script = data.subarray(8, 8 + len).toString('utf8');
  const name = img.subarray(32, 64).toString('utf8').replace(/\0+$/, '');
  return { name, time: img.readUInt32BE(8), script };
}

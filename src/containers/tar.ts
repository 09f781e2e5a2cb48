/**
 * A minimal ustar writer: enough to hand Docker's putArchive a few small files (authorized_keys)
 * with exact owners and modes. Names must fit ustar's 100-byte field.
 */
export interface TarEntry {
  path: string;
  /** Absent for a directory. */
  content?: Buffer | string;
  mode: number;
  uid?: number;
  gid?: number;
}

function octal(n: number, width: number): string {
  return n.toString(8).padStart(width - 1, '0') + '\0';
}

function header(e: TarEntry, size: number): Buffer {
  const h = Buffer.alloc(512);
  const name = e.content === undefined && !e.path.endsWith('/') ? `${e.path}/` : e.path;
  if (Buffer.byteLength(name) > 100) throw new Error(`tar entry name too long: ${name}`);
  h.write(name, 0, 100, 'utf8');
  h.write(octal(e.mode & 0o7777, 8), 100, 'ascii');
  h.write(octal(e.uid ?? 0, 8), 108, 'ascii');
  h.write(octal(e.gid ?? 0, 8), 116, 'ascii');
  h.write(octal(size, 12), 124, 'ascii');
  h.write(octal(0, 12), 136, 'ascii'); // mtime
  h.write('        ', 148, 'ascii'); // checksum placeholder: spaces while summing
  h.write(e.content === undefined ? '5' : '0', 156, 'ascii');
  h.write('ustar\0' + '00', 257, 'ascii');
  h.write('root', 265, 'ascii');
  h.write('root', 297, 'ascii');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'ascii');
  return h;
}

export function tar(entries: TarEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const data = e.content === undefined ? Buffer.alloc(0) : Buffer.from(e.content);
    parts.push(header(e, data.length), data, Buffer.alloc((512 - (data.length % 512)) % 512));
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

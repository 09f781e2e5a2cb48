/**
 * TFTP wire format: RFC 1350 packets plus the RFC 2347 OACK.
 * decode() never throws: anything off the wire is untrusted, so malformed input
 * comes back as a typed error the server can count and drop.
 */

export const Opcode = { RRQ: 1, WRQ: 2, DATA: 3, ACK: 4, ERROR: 5, OACK: 6 } as const;

export const ErrorCode = {
  NOT_DEFINED: 0,
  FILE_NOT_FOUND: 1,
  ACCESS_VIOLATION: 2,
  DISK_FULL: 3,
  ILLEGAL_OPERATION: 4,
  UNKNOWN_TID: 5,
  FILE_EXISTS: 6,
  NO_SUCH_USER: 7,
  OPTION_REFUSED: 8, // RFC 2347
} as const;

/** Option names are lower-cased (they are case-insensitive); the object has no prototype, so "__proto__" is just a key. */
export type TftpOptions = Record<string, string>;

export type Packet =
  | { type: 'rrq' | 'wrq'; filename: string; mode: string; options: TftpOptions }
  | { type: 'data'; block: number; data: Buffer }
  | { type: 'ack'; block: number }
  | { type: 'error'; code: number; message: string }
  | { type: 'oack'; options: TftpOptions };

export type DecodeErrorReason =
  | 'short'
  | 'bad-opcode'
  | 'unterminated'
  | 'empty-field'
  | 'odd-options'
  | 'bad-encoding'
  | 'bad-length';

export interface DecodeError {
  reason: DecodeErrorReason;
  detail: string;
}

export type DecodeResult = { ok: true; packet: Packet } | { ok: false; error: DecodeError };

const fail = (reason: DecodeErrorReason, detail: string): DecodeResult => ({ ok: false, error: { reason, detail } });

// fatal: a filename with invalid UTF-8 is rejected instead of silently becoming U+FFFD.
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Splits buf[from..] into NUL-terminated strings; the last byte must be NUL. */
function strings(buf: Buffer, from: number): string[] | DecodeError {
  if (buf.length <= from || buf[buf.length - 1] !== 0) return { reason: 'unterminated', detail: 'string not NUL-terminated' };
  const out: string[] = [];
  let start = from;
  while (start < buf.length) {
    const end = buf.indexOf(0, start);
    try {
      out.push(utf8.decode(buf.subarray(start, end)));
    } catch {
      return { reason: 'bad-encoding', detail: 'string is not valid UTF-8' };
    }
    start = end + 1;
  }
  return out;
}

function optionPairs(list: string[]): TftpOptions | DecodeError {
  if (list.length % 2 !== 0) return { reason: 'odd-options', detail: 'option without value' };
  const opts: TftpOptions = Object.create(null) as TftpOptions;
  for (let i = 0; i < list.length; i += 2) {
    const name = list[i]!.toLowerCase();
    if (name === '') return { reason: 'empty-field', detail: 'empty option name' };
    if (!(name in opts)) opts[name] = list[i + 1]!; // first occurrence wins
  }
  return opts;
}

const isErr = (x: unknown): x is DecodeError => typeof x === 'object' && x !== null && 'reason' in x && 'detail' in x;

export function decode(buf: Buffer): DecodeResult {
  if (buf.length < 2) return fail('short', `packet of ${buf.length} bytes`);
  const op = buf.readUInt16BE(0);
  switch (op) {
    case Opcode.RRQ:
    case Opcode.WRQ: {
      const list = strings(buf, 2);
      if (isErr(list)) return { ok: false, error: list };
      if (list.length < 2) return fail('unterminated', 'request needs filename and mode');
      const [filename, mode, ...rest] = list as [string, string, ...string[]];
      if (filename === '' || mode === '') return fail('empty-field', 'empty filename or mode');
      const options = optionPairs(rest);
      if (isErr(options)) return { ok: false, error: options };
      return { ok: true, packet: { type: op === Opcode.RRQ ? 'rrq' : 'wrq', filename, mode: mode.toLowerCase(), options } };
    }
    case Opcode.DATA:
      if (buf.length < 4) return fail('short', 'DATA without block number');
      return { ok: true, packet: { type: 'data', block: buf.readUInt16BE(2), data: buf.subarray(4) } };
    case Opcode.ACK:
      if (buf.length !== 4) return fail('bad-length', `ACK of ${buf.length} bytes`);
      return { ok: true, packet: { type: 'ack', block: buf.readUInt16BE(2) } };
    case Opcode.ERROR: {
      if (buf.length < 4) return fail('short', 'ERROR without code');
      // Lenient about the terminator: an error is worth honouring even from a sloppy peer.
      const end = buf.indexOf(0, 4);
      const message = buf.toString('latin1', 4, end < 0 ? buf.length : end);
      return { ok: true, packet: { type: 'error', code: buf.readUInt16BE(2), message } };
    }
    case Opcode.OACK: {
      const list = buf.length === 2 ? [] : strings(buf, 2);
      if (isErr(list)) return { ok: false, error: list };
      const options = optionPairs(list);
      if (isErr(options)) return { ok: false, error: options };
      return { ok: true, packet: { type: 'oack', options } };
    }
    default:
      return fail('bad-opcode', `opcode ${op}`);
  }
}

function cstr(s: string): Buffer {
  if (s.includes('\0')) throw new TypeError('TFTP strings cannot contain NUL');
  return Buffer.from(s + '\0', 'utf8');
}

function withStrings(op: number, parts: string[]): Buffer {
  const head = Buffer.alloc(2);
  head.writeUInt16BE(op, 0);
  return Buffer.concat([head, ...parts.map(cstr)]);
}

const flat = (o: Record<string, string | number>): string[] => Object.entries(o).flatMap(([k, v]) => [k, String(v)]);

export function encodeRrq(filename: string, mode = 'octet', options: Record<string, string | number> = {}): Buffer {
  return withStrings(Opcode.RRQ, [filename, mode, ...flat(options)]);
}

export function encodeWrq(filename: string, mode = 'octet', options: Record<string, string | number> = {}): Buffer {
  return withStrings(Opcode.WRQ, [filename, mode, ...flat(options)]);
}

export function encodeOack(options: Record<string, string | number>): Buffer {
  return withStrings(Opcode.OACK, flat(options));
}

/** Block numbers are taken modulo 2^16: transfers past block 65535 roll over to 0. */
export function encodeData(block: number, data: Uint8Array): Buffer {
  const b = Buffer.allocUnsafe(4 + data.length);
  b.writeUInt16BE(Opcode.DATA, 0);
  b.writeUInt16BE(block & 0xffff, 2);
  b.set(data, 4);
  return b;
}

export function encodeAck(block: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt16BE(Opcode.ACK, 0);
  b.writeUInt16BE(block & 0xffff, 2);
  return b;
}

export function encodeError(code: number, message: string): Buffer {
  const msg = Buffer.from(message.replaceAll('\0', ' ') + '\0', 'utf8');
  const b = Buffer.allocUnsafe(4 + msg.length);
  b.writeUInt16BE(Opcode.ERROR, 0);
  b.writeUInt16BE(code & 0xffff, 2);
  msg.copy(b, 4);
  return b;
}

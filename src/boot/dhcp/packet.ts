/**
 * BOOTP/DHCPv4 wire format (RFC 951, 2131, 2132, 3396; PXE options from RFC 4578).
 * decodePacket() is the single gate for untrusted bytes: it either returns a fully bounds-checked
 * packet or throws DhcpParseError — callers never index into the raw buffer themselves.
 */

import { isIPv4 } from 'node:net';
import { intToIp, ipToInt, parseDhcpSubnet } from '../../util/net.js';

export const BOOTREQUEST = 1;
export const BOOTREPLY = 2;
export const MAGIC_COOKIE = 0x63825363;
/** Fixed BOOTP header incl. magic cookie; options start here. */
export const HEADER_LEN = 240;
/** RFC 951/1542: BOOTP relays and old clients expect at least this much. */
export const MIN_PACKET_LEN = 300;
/** RFC 2131 §2: every client accepts a 576-byte IP datagram = 548 bytes of DHCP after IP+UDP headers. */
export const DEFAULT_MAX_MESSAGE = 576 - 28;
export const FLAG_BROADCAST = 0x8000;

export const MsgType = {
  DISCOVER: 1,
  OFFER: 2,
  REQUEST: 3,
  DECLINE: 4,
  ACK: 5,
  NAK: 6,
  RELEASE: 7,
  INFORM: 8,
} as const;

export const Opt = {
  PAD: 0,
  SUBNET_MASK: 1,
  ROUTER: 3,
  DNS: 6,
  HOSTNAME: 12,
  DOMAIN: 15,
  BROADCAST: 28,
  REQUESTED_IP: 50,
  LEASE_TIME: 51,
  OVERLOAD: 52,
  MSG_TYPE: 53,
  SERVER_ID: 54,
  PARAM_REQUEST_LIST: 55,
  MESSAGE: 56,
  MAX_MESSAGE_SIZE: 57,
  VENDOR_CLASS: 60,
  CLIENT_ID: 61,
  TFTP_SERVER: 66,
  BOOTFILE: 67,
  CLIENT_ARCH: 93,
  CLIENT_NDI: 94,
  UUID: 97,
  END: 255,
} as const;

export class DhcpParseError extends Error {
  override name = 'DhcpParseError';
}

export interface DhcpPacket {
  op: number;
  htype: number;
  hlen: number;
  hops: number;
  xid: number;
  secs: number;
  flags: number;
  ciaddr: string;
  yiaddr: string;
  siaddr: string;
  giaddr: string;
  /** 16 bytes; the hardware address is the first `hlen` of them. */
  chaddr: Buffer;
  sname: string;
  file: string;
  /** Decoded: code → value (repeated codes concatenated, RFC 3396). Encoding: written in insertion order. */
  options: Map<number, Buffer>;
}

// ---------------------------------------------------------------- addresses

// Address arithmetic lives in src/util/net.ts; re-exported for the server and the tests.
export { ipToInt, intToIp };

export function isIpv4(s: string): boolean {
  return isIPv4(s);
}

/**
 * ipToInt for the per-packet path: the same strict dotted quad as isIPv4 (no leading zeros, octets up to
 * 255, nothing else), without its regex, split and array; throws the same error for anything else.
 */
export function ipv4ToInt(ip: string): number {
  let n = 0;
  let octet = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i < ip.length; i++) {
    const c = ip.charCodeAt(i) - 48;
    if (c === -2 && digits > 0 && dots < 3 && octet <= 255) {
      n = n * 256 + octet;
      octet = digits = 0;
      dots++;
    } else if (c >= 0 && c <= 9 && digits < 3 && !(digits === 1 && octet === 0)) {
      octet = octet * 10 + c;
      digits++;
    } else throw new Error(`invalid IPv4 address: ${ip}`);
  }
  if (dots !== 3 || digits === 0 || octet > 255) throw new Error(`invalid IPv4 address: ${ip}`);
  return n * 256 + octet;
}

export function ipToBuf(ip: string): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(ipv4ToInt(ip));
  return b;
}

function bufToIp(b: Buffer, off = 0): string {
  return `${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}`;
}

export interface Subnet {
  network: number;
  mask: number;
  prefix: number;
  broadcast: number;
}

/**
 * The boot subnet as 32-bit numbers, for the server's arithmetic. Parsing and its refusals (host bits
 * set, a prefix DHCP cannot serve) are parseDhcpSubnet's in src/util/net.ts, shared with config validation.
 */
export function parseCidr(cidr: string): Subnet {
  const s = parseDhcpSubnet(cidr);
  return { network: ipToInt(s.network), mask: ipToInt(s.mask), prefix: s.prefix, broadcast: ipToInt(s.broadcast) };
}

export function inSubnet(ip: string | number, s: Subnet): boolean {
  const n = typeof ip === 'number' ? ip : ipv4ToInt(ip);
  return (n & s.mask) >>> 0 === s.network;
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

export function macToString(chaddr: Buffer, hlen = 6): string {
  let s = '';
  for (let i = 0; i < hlen; i++) s += i ? ':' + HEX[chaddr[i]!]! : HEX[chaddr[i]!]!;
  return s;
}

export function macToBuf(mac: string): Buffer {
  if (!/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(mac)) throw new Error(`invalid MAC: ${mac}`);
  return Buffer.from(mac.replaceAll(':', ''), 'hex');
}

// ---------------------------------------------------------------- decoding

/** Walks an option area, appending into `out`. Returns true if END was seen. */
function parseOptions(buf: Buffer, start: number, end: number, out: Map<number, Buffer>): boolean {
  let i = start;
  while (i < end) {
    const code = buf[i]!;
    if (code === Opt.END) return true;
    if (code === Opt.PAD) {
      i++;
      continue;
    }
    if (i + 1 >= end) throw new DhcpParseError(`option ${code} truncated before its length`);
    const len = buf[i + 1]!;
    if (i + 2 + len > end) throw new DhcpParseError(`option ${code} length ${len} runs past the end`);
    const val = buf.subarray(i + 2, i + 2 + len);
    const prev = out.get(code);
    out.set(code, prev ? Buffer.concat([prev, val]) : Buffer.from(val)); // copy: never alias the socket buffer
    i += 2 + len;
  }
  return false;
}

/** Options whose length is fixed by RFC 2132: a wrong length means a broken or hostile sender. */
const FIXED_LEN: ReadonlyMap<number, number> = new Map([
  [Opt.MSG_TYPE, 1],
  [Opt.REQUESTED_IP, 4],
  [Opt.SERVER_ID, 4],
  [Opt.MAX_MESSAGE_SIZE, 2],
  [Opt.LEASE_TIME, 4],
  [Opt.OVERLOAD, 1],
]);

function cstring(b: Buffer): string {
  const nul = b.indexOf(0);
  return (nul < 0 ? b : b.subarray(0, nul)).toString('latin1');
}

/** Strict decode of a BOOTREQUEST/BOOTREPLY. Throws DhcpParseError on anything malformed. */
export function decodePacket(buf: Buffer): DhcpPacket {
  if (buf.length < HEADER_LEN) throw new DhcpParseError(`short packet (${buf.length} bytes)`);
  const op = buf[0]!;
  if (op !== BOOTREQUEST && op !== BOOTREPLY) throw new DhcpParseError(`bad op ${op}`);
  const hlen = buf[2]!;
  if (hlen > 16) throw new DhcpParseError(`bad hlen ${hlen}`);
  if (buf.readUInt32BE(236) !== MAGIC_COOKIE) throw new DhcpParseError('bad magic cookie');

  const options = new Map<number, Buffer>();
  parseOptions(buf, HEADER_LEN, buf.length, options);
  // Option overload (52): file (1), sname (2) or both (3) carry more options instead of strings.
  const ov = options.get(Opt.OVERLOAD);
  const overload = ov?.length === 1 ? ov[0]! : 0;
  if (overload > 3) throw new DhcpParseError(`bad overload value ${overload}`);
  if (overload & 1) parseOptions(buf, 108, 236, options);
  if (overload & 2) parseOptions(buf, 44, 108, options);
  for (const [code, len] of FIXED_LEN) {
    const v = options.get(code);
    if (v && v.length !== len) throw new DhcpParseError(`option ${code} has length ${v.length}, want ${len}`);
  }

  return {
    op,
    htype: buf[1]!,
    hlen,
    hops: buf[3]!,
    xid: buf.readUInt32BE(4),
    secs: buf.readUInt16BE(8),
    flags: buf.readUInt16BE(10),
    ciaddr: bufToIp(buf, 12),
    yiaddr: bufToIp(buf, 16),
    siaddr: bufToIp(buf, 20),
    giaddr: bufToIp(buf, 24),
    chaddr: Buffer.from(buf.subarray(28, 44)),
    sname: overload & 2 ? '' : cstring(buf.subarray(44, 108)),
    file: overload & 1 ? '' : cstring(buf.subarray(108, 236)),
    options,
  };
}

// ---------------------------------------------------------------- option value helpers

export const optU8 = (n: number): Buffer => Buffer.from([n & 255]);
export const optU16 = (n: number): Buffer => {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
};
export const optU32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
};
export const optIps = (ips: string[]): Buffer => Buffer.concat(ips.map(ipToBuf));
export const optStr = (s: string): Buffer => Buffer.from(s, 'utf8');

export function readIpOpt(v: Buffer | undefined): string | undefined {
  return v && v.length === 4 ? bufToIp(v) : undefined;
}

/** Printable text of a string option; trailing NULs (some firmwares send them) dropped. */
export function readStrOpt(v: Buffer | undefined): string | undefined {
  if (!v) return undefined;
  const s = v.toString('latin1').replace(/\0+$/, '');
  return s.length ? s : undefined;
}

/** Option 97 (RFC 4578): type 0 followed by a 16-byte GUID. Anything else → undefined, never an error. */
export function readUuidOpt(v: Buffer | undefined): string | undefined {
  if (!v || v.length !== 17 || v[0] !== 0) return undefined;
  const h = v.subarray(1).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** Option 93: list of 16-bit architecture types; we report the first. Odd lengths → undefined. */
export function readArchOpt(v: Buffer | undefined): number | undefined {
  if (!v || v.length < 2 || v.length % 2 !== 0) return undefined;
  return v.readUInt16BE(0);
}

// ---------------------------------------------------------------- encoding

export interface EncodeOptions {
  /** Upper bound for the whole DHCP message; options that would overflow it are left out. */
  maxLength?: number;
  /** Codes that get room first, in this order, when maxLength is tight. Others fill what is left. */
  priority?: readonly number[];
  /** Codes that must fit or encoding throws (a reply without 53/54 is useless). */
  required?: ReadonlySet<number>;
}

function writeCString(out: Buffer, off: number, size: number, s: string): void {
  const b = Buffer.from(s, 'latin1');
  if (b.length >= size) return; // needs room for the terminating NUL; too long → leave empty
  b.copy(out, off);
}

/** Wire size of one option; values over 255 bytes are split into several instances (RFC 3396). */
function optionWireSize(v: Buffer): number {
  return v.length + 2 * Math.max(1, Math.ceil(v.length / 255));
}

/** Takes option `code` into `chosen` if it fits the budget left; returns what is left then. */
function choose(code: number, v: Buffer | undefined, chosen: Set<number>, budget: number, enc: EncodeOptions, max: number): number {
  if (!v || chosen.has(code)) return budget;
  const need = optionWireSize(v);
  if (need <= budget) {
    chosen.add(code);
    return budget - need;
  }
  if (enc.required?.has(code)) throw new Error(`option ${code} does not fit in ${max} bytes`);
  return budget;
}

/**
 * Encodes a packet. Which options fit is decided by `priority` then insertion order; the chosen
 * ones are written in insertion order (so a reply can follow the client's option 55 order while
 * the boot options keep their room). Always at least 300 bytes, zero padded.
 */
export function encodePacket(p: DhcpPacket, enc: EncodeOptions = {}): Buffer {
  const max = Math.max(MIN_PACKET_LEN, enc.maxLength ?? 1500);
  const chosen = new Set<number>();
  let budget = max - HEADER_LEN - 1; // one byte for END
  for (const code of enc.priority ?? []) budget = choose(code, p.options.get(code), chosen, budget, enc, max);
  for (const [code, v] of p.options) budget = choose(code, v, chosen, budget, enc, max);

  const buf = Buffer.alloc(max);
  buf[0] = p.op;
  buf[1] = p.htype;
  buf[2] = p.hlen;
  buf[3] = p.hops;
  buf.writeUInt32BE(p.xid >>> 0, 4);
  buf.writeUInt16BE(p.secs, 8);
  buf.writeUInt16BE(p.flags, 10);
  buf.writeUInt32BE(ipv4ToInt(p.ciaddr), 12);
  buf.writeUInt32BE(ipv4ToInt(p.yiaddr), 16);
  buf.writeUInt32BE(ipv4ToInt(p.siaddr), 20);
  buf.writeUInt32BE(ipv4ToInt(p.giaddr), 24);
  p.chaddr.copy(buf, 28, 0, 16);
  writeCString(buf, 44, 64, p.sname);
  writeCString(buf, 108, 128, p.file);
  buf.writeUInt32BE(MAGIC_COOKIE, 236);

  let off = HEADER_LEN;
  for (const [code, value] of p.options) {
    if (!chosen.has(code)) continue;
    const chunks = Math.max(1, Math.ceil(value.length / 255));
    for (let i = 0; i < chunks; i++) {
      const part = value.subarray(i * 255, (i + 1) * 255);
      buf[off++] = code;
      buf[off++] = part.length;
      part.copy(buf, off);
      off += part.length;
    }
  }
  buf[off++] = Opt.END;
  return buf.subarray(0, Math.max(off, MIN_PACKET_LEN));
}

/** A blank BOOTREQUEST for tests and tools; fill in options afterwards. */
export function newRequest(mac: string, xid: number, msgType: number): DhcpPacket {
  const chaddr = Buffer.alloc(16);
  macToBuf(mac).copy(chaddr);
  return {
    op: BOOTREQUEST,
    htype: 1,
    hlen: 6,
    hops: 0,
    xid,
    secs: 0,
    flags: 0,
    ciaddr: '0.0.0.0',
    yiaddr: '0.0.0.0',
    siaddr: '0.0.0.0',
    giaddr: '0.0.0.0',
    chaddr,
    sname: '',
    file: '',
    options: new Map([[Opt.MSG_TYPE, optU8(msgType)]]),
  };
}

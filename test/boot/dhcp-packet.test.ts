import { describe, expect, it } from 'vitest';
import {
  DhcpParseError,
  MIN_PACKET_LEN,
  MsgType,
  Opt,
  decodePacket,
  encodePacket,
  inSubnet,
  newRequest,
  optIps,
  optStr,
  optU16,
  optU8,
  parseCidr,
  readArchOpt,
  readUuidOpt,
} from '../../src/boot/dhcp/packet.js';

const MAC = '02:aa:bb:cc:dd:01';

function discover(): Buffer {
  const p = newRequest(MAC, 0x12345678, MsgType.DISCOVER);
  p.options.set(Opt.PARAM_REQUEST_LIST, Buffer.from([1, 3, 6, 66, 67]));
  p.options.set(Opt.HOSTNAME, optStr('board'));
  return encodePacket(p);
}

describe('dhcp packet codec', () => {
  it('round-trips a request and pads to the BOOTP minimum', () => {
    const buf = discover();
    expect(buf.length).toBe(MIN_PACKET_LEN);
    const p = decodePacket(buf);
    expect(p.op).toBe(1);
    expect(p.xid).toBe(0x12345678);
    expect(p.chaddr.subarray(0, 6).toString('hex')).toBe('02aabbccdd01');
    expect(p.options.get(Opt.MSG_TYPE)).toEqual(optU8(MsgType.DISCOVER));
    expect([...p.options.get(Opt.PARAM_REQUEST_LIST)!]).toEqual([1, 3, 6, 66, 67]);
    expect(p.options.get(Opt.HOSTNAME)!.toString()).toBe('board');
  });

  it.each([
    ['short packet', (b: Buffer) => b.subarray(0, 239)],
    ['bad magic cookie', (b: Buffer) => (b.writeUInt32BE(0xdeadbeef, 236), b)],
    ['bad op', (b: Buffer) => ((b[0] = 7), b)],
    ['bad hlen', (b: Buffer) => ((b[2] = 17), b)],
    ['option length past the end', (b: Buffer) => Buffer.concat([b.subarray(0, 243), Buffer.from([12, 200, 65])])],
    ['option cut before its length', (b: Buffer) => Buffer.concat([b.subarray(0, 243), Buffer.from([12])])],
  ])('rejects %s', (_name, mutate) => {
    expect(() => decodePacket(mutate(Buffer.from(discover())))).toThrow(DhcpParseError);
  });

  it.each([
    [Opt.MSG_TYPE, Buffer.from([1, 1])],
    [Opt.REQUESTED_IP, Buffer.from([10, 0, 0])],
    [Opt.SERVER_ID, Buffer.from([10, 0, 0, 1, 1])],
    [Opt.MAX_MESSAGE_SIZE, Buffer.from([2])],
  ])('rejects option %i with a wrong fixed length', (code, value) => {
    const p = newRequest(MAC, 1, MsgType.REQUEST);
    p.options.set(code, value);
    expect(() => decodePacket(encodePacket(p))).toThrow(/length/);
  });

  it('accepts PAD runs and a missing END, and concatenates split options (RFC 3396)', () => {
    const head = discover().subarray(0, 240);
    const opts = Buffer.from([0, 0, 53, 1, 1, 0, 12, 3, 97, 98, 99, 12, 2, 100, 101]);
    const p = decodePacket(Buffer.concat([head, opts]));
    expect(p.options.get(Opt.HOSTNAME)!.toString()).toBe('abcde');
  });

  it('reads options from overloaded file/sname fields (option 52)', () => {
    const buf = Buffer.from(discover());
    buf.fill(0, 108, 236);
    Buffer.from([60, 9, ...Buffer.from('PXEClient'), 255]).copy(buf, 108);
    const withOverload = Buffer.concat([buf.subarray(0, 240), Buffer.from([53, 1, 1, 52, 1, 1, 255])]);
    const p = decodePacket(withOverload);
    expect(p.options.get(Opt.VENDOR_CLASS)!.toString()).toBe('PXEClient');
    expect(p.file).toBe('');
  });

  it('splits long option values into consecutive instances', () => {
    const p = newRequest(MAC, 1, MsgType.DISCOVER);
    p.options.set(Opt.HOSTNAME, Buffer.alloc(300, 0x61));
    const buf = encodePacket(p);
    expect(decodePacket(buf).options.get(Opt.HOSTNAME)!.length).toBe(300);
  });

  it('leaves out options that exceed maxLength, by priority, and throws for required ones', () => {
    const p = newRequest(MAC, 1, MsgType.OFFER);
    p.options.set(Opt.HOSTNAME, Buffer.alloc(250, 0x61));
    p.options.set(Opt.DOMAIN, Buffer.alloc(250, 0x62));
    p.options.set(Opt.BOOTFILE, optStr('boot.scr'));
    const buf = encodePacket(p, { maxLength: 548, priority: [Opt.MSG_TYPE, Opt.BOOTFILE] });
    expect(buf.length).toBeLessThanOrEqual(548);
    const back = decodePacket(buf).options;
    expect(back.get(Opt.BOOTFILE)!.toString()).toBe('boot.scr');
    expect(back.has(Opt.HOSTNAME)).toBe(true); // first in insertion order gets the leftover room
    expect(back.has(Opt.DOMAIN)).toBe(false);
    expect(() => encodePacket(p, { maxLength: 300, required: new Set([Opt.HOSTNAME]) })).toThrow(/does not fit/);
  });

  it('parses PXE options leniently', () => {
    expect(readArchOpt(optU16(0x000a))).toBe(10);
    expect(readArchOpt(Buffer.from([0]))).toBeUndefined();
    const uuid = Buffer.concat([Buffer.from([0]), Buffer.from('00112233445566778899aabbccddeeff', 'hex')]);
    expect(readUuidOpt(uuid)).toBe('00112233-4455-6677-8899-aabbccddeeff');
    expect(readUuidOpt(uuid.subarray(0, 10))).toBeUndefined();
    expect(readUuidOpt(Buffer.concat([Buffer.from([1]), uuid.subarray(1)]))).toBeUndefined();
  });

  it('parses subnets', () => {
    const s = parseCidr('10.77.0.0/24');
    expect(inSubnet('10.77.0.99', s)).toBe(true);
    expect(inSubnet('10.77.1.1', s)).toBe(false);
    expect(optIps(['255.255.255.0']).readUInt32BE(0)).toBe(s.mask);
    expect(() => parseCidr('10.77.0.1/24')).toThrow(/host bits/);
    expect(() => parseCidr('10.77.0.0/33')).toThrow();
  });
});

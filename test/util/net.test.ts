import { describe, expect, it } from 'vitest';
import { parseCidr as dhcpParseCidr } from '../../src/boot/dhcp/packet.js';
import { inSubnet, parseCidr, parseDhcpSubnet } from '../../src/util/net.js';

describe('parseCidr', () => {
  it('parses a network into its addresses', () => {
    expect(parseCidr('192.168.50.0/24')).toEqual({ network: '192.168.50.0', prefix: 24, mask: '255.255.255.0', broadcast: '192.168.50.255' });
    expect(parseCidr('172.16.0.0/12')).toEqual({ network: '172.16.0.0', prefix: 12, mask: '255.240.0.0', broadcast: '172.31.255.255' });
    expect(parseCidr('0.0.0.0/0')).toEqual({ network: '0.0.0.0', prefix: 0, mask: '0.0.0.0', broadcast: '255.255.255.255' });
    expect(parseCidr('192.168.50.7/32')).toEqual({ network: '192.168.50.7', prefix: 32, mask: '255.255.255.255', broadcast: '192.168.50.7' });
  });

  it('refuses host bits, naming the network that was probably meant', () => {
    expect(() => parseCidr('10.0.0.5/24')).toThrow('subnet 10.0.0.5/24 has host bits set: did you mean 10.0.0.0/24?');
    expect(() => parseCidr('127.0.0.1/8')).toThrow('subnet 127.0.0.1/8 has host bits set: did you mean 127.0.0.0/8?');
    expect(() => parseCidr('192.168.50.129/25')).toThrow('subnet 192.168.50.129/25 has host bits set: did you mean 192.168.50.128/25?');
    expect(() => parseCidr('1.0.0.0/0')).toThrow('subnet 1.0.0.0/0 has host bits set: did you mean 0.0.0.0/0?');
  });

  it('refuses what is not an IPv4 CIDR', () => {
    for (const bad of ['192.168.50.0', '192.168.50.0/33', '192.168.50.0/', '192.168.50.256/24', '192.168.50/24', 'fe80::/64', '192.168.50.0/24 ', 'nope', '']) {
      expect(() => parseCidr(bad), bad).toThrow(`not an IPv4 CIDR: ${bad}`);
    }
  });

  it('inSubnet counts host addresses only', () => {
    const s = parseCidr('192.168.50.0/24');
    expect(inSubnet('192.168.50.1', s)).toBe(true);
    expect(inSubnet('192.168.50.254', s)).toBe(true);
    expect(inSubnet('192.168.50.0', s)).toBe(false);
    expect(inSubnet('192.168.50.255', s)).toBe(false);
    expect(inSubnet('192.168.51.1', s)).toBe(false);
  });
});

describe('parseDhcpSubnet', () => {
  it('takes the prefixes the DHCP server serves, /1 to /30', () => {
    expect(parseDhcpSubnet('128.0.0.0/1').prefix).toBe(1);
    expect(parseDhcpSubnet('192.168.50.4/30')).toEqual(parseCidr('192.168.50.4/30'));
  });

  it('refuses the others, and whatever parseCidr refuses', () => {
    expect(() => parseDhcpSubnet('0.0.0.0/0')).toThrow('subnet 0.0.0.0/0: the DHCP server serves prefixes /1 to /30, not /0');
    expect(() => parseDhcpSubnet('192.168.50.0/31')).toThrow('subnet 192.168.50.0/31: the DHCP server serves prefixes /1 to /30, not /31');
    expect(() => parseDhcpSubnet('192.168.50.1/32')).toThrow('subnet 192.168.50.1/32: the DHCP server serves prefixes /1 to /30, not /32');
    expect(() => parseDhcpSubnet('10.0.0.5/24')).toThrow('subnet 10.0.0.5/24 has host bits set: did you mean 10.0.0.0/24?');
    expect(() => parseDhcpSubnet('nope')).toThrow('not an IPv4 CIDR: nope');
  });
});

describe('the DHCP server’s parseCidr', () => {
  it('is parseDhcpSubnet in numbers: same subnet, same refusals', () => {
    expect(dhcpParseCidr('192.168.50.0/24')).toEqual({ network: 0xc0a83200, mask: 0xffffff00, prefix: 24, broadcast: 0xc0a832ff });
    expect(dhcpParseCidr('128.0.0.0/1')).toEqual({ network: 0x80000000, mask: 0x80000000, prefix: 1, broadcast: 0xffffffff });
    expect(() => dhcpParseCidr('10.0.0.5/24')).toThrow('subnet 10.0.0.5/24 has host bits set: did you mean 10.0.0.0/24?');
    expect(() => dhcpParseCidr('192.168.50.0/31')).toThrow('subnet 192.168.50.0/31: the DHCP server serves prefixes /1 to /30, not /31');
    expect(() => dhcpParseCidr('192.168.50.0/33')).toThrow('not an IPv4 CIDR: 192.168.50.0/33');
  });
});

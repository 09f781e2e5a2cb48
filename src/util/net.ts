import { isIPv4 } from 'node:net';

export function ipToInt(ip: string): number {
  if (!isIPv4(ip)) throw new Error(`invalid IPv4 address: ${ip}`);
  const p = ip.split('.').map(Number);
  return (((p[0]! << 24) | (p[1]! << 16) | (p[2]! << 8) | p[3]!) >>> 0);
}

export function intToIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

export interface Subnet {
  network: string;
  prefix: number;
  mask: string;
  broadcast: string;
}

/**
 * The one IPv4 CIDR parser (`10.77.0.0/24`, prefix /0 to /32). The address must be the network itself:
 * host bits set (`10.77.0.5/24`) are an operator mistake (an interface address where a network was
 * meant), so they throw, naming the network that was probably meant, rather than being masked away.
 */
export function parseCidr(cidr: string): Subnet {
  const m = /^(\d+\.\d+\.\d+\.\d+)\/(\d{1,2})$/.exec(cidr);
  if (!m || !isIPv4(m[1]!) || Number(m[2]) > 32) throw new Error(`not an IPv4 CIDR: ${cidr}`);
  const prefix = Number(m[2]);
  const maskInt = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  const addr = ipToInt(m[1]!);
  const net = (addr & maskInt) >>> 0;
  if (net !== addr) throw new Error(`subnet ${cidr} has host bits set: did you mean ${intToIp(net)}/${prefix}?`);
  return { network: intToIp(net), prefix, mask: intToIp(maskInt), broadcast: intToIp((net | ~maskInt) >>> 0) };
}

/**
 * Prefixes the DHCP server serves: with /0 every address would be "inside" (replies unicast anywhere); a
 * /31 or /32 has no address to lease besides its network and broadcast addresses.
 */
export const DHCP_MIN_PREFIX = 1;
export const DHCP_MAX_PREFIX = 30;

/** parseCidr for the boot network, which the DHCP server serves: also refuses prefixes it cannot serve. */
export function parseDhcpSubnet(cidr: string): Subnet {
  const s = parseCidr(cidr);
  if (s.prefix < DHCP_MIN_PREFIX || s.prefix > DHCP_MAX_PREFIX) {
    throw new Error(`subnet ${cidr}: the DHCP server serves prefixes /${DHCP_MIN_PREFIX} to /${DHCP_MAX_PREFIX}, not /${s.prefix}`);
  }
  return s;
}

/** True when ip is a host address of the subnet (not the network or broadcast address). */
export function inSubnet(ip: string, s: Subnet): boolean {
  if (!isIPv4(ip)) return false;
  const n = ipToInt(ip);
  const mask = ipToInt(s.mask);
  return ((n & mask) >>> 0) === ipToInt(s.network) && ip !== s.network && ip !== s.broadcast;
}

const MAC_RE = /^([0-9a-f]{2})([:-]?)([0-9a-f]{2})\2([0-9a-f]{2})\2([0-9a-f]{2})\2([0-9a-f]{2})\2([0-9a-f]{2})$/i;

/** Canonical MAC form: lower case, colon separated. Throws on anything else. */
export function normalizeMac(mac: string): string {
  const m = MAC_RE.exec(mac.trim());
  if (!m) throw new Error(`not a MAC address: ${mac}`);
  return [m[1], m[3], m[4], m[5], m[6], m[7]].join(':').toLowerCase();
}

export function isMac(mac: string): boolean {
  return MAC_RE.test(mac.trim());
}

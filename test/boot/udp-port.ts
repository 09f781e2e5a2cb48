/**
 * UDP ports for the DHCP tests, checked free. The DHCP server binds with SO_REUSEADDR (so the
 * lab and tests can share 67), which also means a bind never fails on a port someone else holds:
 * two servers on one port hear each other's traffic and steal each other's unicast. So a port is
 * picked by the kernel (free at that moment), and after our sockets are bound we count every
 * socket on it in this network namespace: more than ours means someone raced us, and we retry.
 */
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';

/** Sockets bound to UDP `port` in this network namespace, on any address, IPv4 and IPv6. */
export function udpSocketsOn(port: number): number {
  const hex = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  let n = 0;
  for (const f of ['/proc/net/udp', '/proc/net/udp6']) {
    let text = '';
    try {
      text = readFileSync(f, 'utf8');
    } catch {
      continue; // no IPv6 in this kernel
    }
    for (const line of text.split('\n').slice(1)) if (line.trim().split(/\s+/)[1]?.endsWith(hex)) n++;
  }
  return n;
}

/** A port that nobody holds right now: the kernel picks it for a socket on 0.0.0.0 without SO_REUSEADDR. */
export function unusedUdpPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket('udp4');
    s.once('error', reject);
    s.bind(0, '0.0.0.0', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/**
 * Runs `start(port)` (which binds exactly `ours` sockets to the port) on a port no one else
 * holds; if another socket showed up on it meanwhile, `stop`s and tries another port.
 */
export async function onPrivatePort<T>(
  ours: number,
  start: (port: number) => Promise<T>,
  stop: (t: T) => Promise<void>,
): Promise<{ port: number; value: T }> {
  let seen = '';
  for (let i = 0; i < 10; i++) {
    const port = await unusedUdpPort();
    const value = await start(port);
    const n = udpSocketsOn(port);
    if (n === ours) return { port, value };
    seen += ` ${port}: ${n} sockets;`;
    await stop(value);
  }
  throw new Error(`no private UDP port for ${ours} sockets after 10 tries:${seen}`);
}

/** A UDP port pair (a DHCP server answers relays on port+1) that nothing holds now, for a server's config. */
export async function unusedUdpPortPair(): Promise<number> {
  for (;;) {
    const a = dgram.createSocket('udp4');
    const port = await new Promise<number>((r) => a.bind(0, '127.0.0.1', () => r(a.address().port)));
    const b = dgram.createSocket('udp4');
    const ok = port < 65534 && (await new Promise<boolean>((r) => (b.once('error', () => r(false)), b.bind(port + 1, '127.0.0.1', () => r(true)))));
    a.close();
    b.close();
    if (ok) return port;
  }
}

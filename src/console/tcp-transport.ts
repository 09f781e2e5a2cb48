import { EventEmitter } from 'node:events';
import { connect, type Socket } from 'node:net';
import { TelnetCodec } from './telnet.js';
import type { Connector, Transport, TransportEvents } from './source.js';

/**
 * Network serial servers: `tcp://host:port` is a raw byte pipe (ser2net "raw", many terminal servers);
 * `telnet://host:port` speaks telnet (ser2net "telnet"), which also carries BREAK.
 */
export function tcpConnector(url: string, o: { connectTimeoutMs?: number } = {}): Connector {
  const u = new URL(url);
  const telnet = u.protocol === 'telnet:';
  if (!telnet && u.protocol !== 'tcp:') throw new Error(`not a network serial URL: ${url}`);
  const host = u.hostname.replace(/^\[|\]$/g, '');
  const port = Number(u.port);
  if (!host || !port) throw new Error(`${url}: need host and port`);
  return {
    target: `${u.protocol}//${u.host}`,
    connect: () =>
      new Promise<Transport>((resolve, reject) => {
        const sock = connect({ host, port });
        const timer = setTimeout(() => sock.destroy(new Error(`no connection after ${o.connectTimeoutMs ?? 5000} ms`)), o.connectTimeoutMs ?? 5000);
        sock.once('error', (err) => {
          clearTimeout(timer);
          reject(err);
        });
        sock.once('connect', () => {
          clearTimeout(timer);
          sock.removeAllListeners('error');
          resolve(new TcpTransport(sock, telnet ? new TelnetCodec() : undefined));
        });
      }),
  };
}

class TcpTransport extends EventEmitter<TransportEvents> implements Transport {
  private gone = false;
  constructor(
    private readonly sock: Socket,
    private readonly telnet?: TelnetCodec,
  ) {
    super();
    sock.setNoDelay(true);
    // A powered-off terminal server sends no FIN: keepalive is how we notice.
    sock.setKeepAlive(true, 5000);
    if (telnet) sock.write(telnet.hello());
    sock.on('data', (chunk: Buffer) => {
      if (!telnet) return void this.emit('data', chunk);
      const { data, reply } = telnet.decode(chunk);
      if (reply.length) sock.write(reply);
      if (data.length) this.emit('data', data);
    });
    let lastError: Error | undefined;
    sock.on('error', (err) => (lastError = err)); // 'close' follows and reports it
    sock.on('close', () => this.lost(lastError ?? new Error('connection closed by the serial server')));
  }

  write(bytes: Uint8Array): Promise<void> {
    const buf = this.telnet ? this.telnet.encode(bytes) : Buffer.from(bytes);
    return new Promise((res, rej) => this.sock.write(buf, (err) => (err ? rej(err) : res())));
  }

  async sendBreak(): Promise<void> {
    if (!this.telnet) throw new Error('a raw TCP serial server cannot send BREAK; use telnet://host:port (ser2net telnet mode)');
    await new Promise<void>((res, rej) => this.sock.write(this.telnet!.breakCommand(), (err) => (err ? rej(err) : res())));
  }

  async close(): Promise<void> {
    this.gone = true;
    this.sock.destroy();
  }

  private lost(err: Error): void {
    if (this.gone) return;
    this.gone = true;
    this.emit('disconnected', err);
  }
}

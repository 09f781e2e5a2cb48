/**
 * TEST HELPER: a UDP relay in front of a TFTP server that drops and duplicates datagrams in
 * both directions, decided by a seeded PRNG (same seed → same sequence of fates).
 *
 * Clients talk to the proxy's port only. For each client the proxy opens an upstream socket;
 * the first reply from the server fixes the server's transfer port (TID), and later client
 * packets are relayed there — a plain port forward would keep hitting the listening port.
 */
import dgram from 'node:dgram';

/** mulberry32: tiny, seedable, good enough to decide packet fates. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface LossyProxyOptions {
  target: { address: string; port: number };
  seed: number;
  /** Probability that a datagram is dropped, each direction. */
  drop: number;
  /** Probability that a datagram is delivered twice (the copy a moment later). */
  duplicate: number;
}

interface Peer {
  client: dgram.RemoteInfo;
  up: dgram.Socket;
  serverPort: number | undefined;
}

export class LossyProxy {
  readonly stats = { toServer: 0, toClient: 0, dropped: 0, duplicated: 0 };
  private sock: dgram.Socket | undefined;
  private readonly peers = new Map<string, Peer>();
  private readonly fateUp: () => number;
  private readonly fateDown: () => number;

  constructor(private readonly o: LossyProxyOptions) {
    // one stream per direction, so one side's timing does not reshuffle the other's fates
    this.fateUp = prng(o.seed);
    this.fateDown = prng(o.seed ^ 0x9e3779b9);
  }

  async start(): Promise<{ address: string; port: number }> {
    const sock = dgram.createSocket('udp4');
    await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
    sock.on('message', (m, r) => this.fromClient(m, r));
    this.sock = sock;
    return { address: '127.0.0.1', port: sock.address().port };
  }

  async stop(): Promise<void> {
    const socks = [this.sock, ...[...this.peers.values()].map((p) => p.up)];
    this.sock = undefined;
    this.peers.clear();
    await Promise.all(socks.map((s) => s && new Promise<void>((r) => s.close(() => r()))));
  }

  private relay(fate: () => number, send: () => void, toServer: boolean): void {
    const r = fate();
    if (r < this.o.drop) {
      this.stats.dropped++;
      return;
    }
    send();
    if (toServer) this.stats.toServer++;
    else this.stats.toClient++;
    if (r < this.o.drop + this.o.duplicate) {
      this.stats.duplicated++;
      setImmediate(send);
    }
  }

  private fromClient(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    const key = `${rinfo.address}:${rinfo.port}`;
    let peer = this.peers.get(key);
    if (!peer) {
      const up = dgram.createSocket('udp4');
      up.bind(0, '127.0.0.1');
      const p: Peer = { client: rinfo, up, serverPort: undefined };
      up.on('message', (m, r) => this.fromServer(p, m, r));
      up.on('error', () => {});
      this.peers.set(key, (peer = p));
    }
    const p = peer;
    this.relay(
      this.fateUp,
      () => p.up.send(msg, p.serverPort ?? this.o.target.port, this.o.target.address),
      true,
    );
  }

  private fromServer(p: Peer, msg: Buffer, rinfo: dgram.RemoteInfo): void {
    p.serverPort ??= rinfo.port; // the transfer's TID
    if (rinfo.port !== p.serverPort) return; // another TID: a real client would reject it too
    this.relay(this.fateDown, () => this.sock?.send(msg, p.client.port, p.client.address), false);
  }
}

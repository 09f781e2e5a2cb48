/**
 * DozenCloud's DHCPv4 server for the boot network: answers enrolled boards (via `lookup`) and,
 * optionally, unknown boards from a small in-memory discovery pool. It is deliberately quiet:
 * a MAC we don't know gets no reply, so we can share a segment with another DHCP server.
 *
 * Sockets. Node has neither SO_BINDTODEVICE nor IP_PKTINFO, so we can't choose the egress
 * interface per packet. Instead:
 *  - `recv` is bound to listenAddress:port (default 0.0.0.0) to see clients' broadcasts;
 *  - `send` is bound to serverAddress:port and every reply leaves through it. For a limited
 *    broadcast (255.255.255.255) with a bound source address and no oif, Linux picks the device
 *    that owns the source address (ip_route_output_key_hash_rcu: "user can direct multicasts and
 *    limited broadcast via necessary interface without fiddling with IP_MULTICAST_IF or
 *    IP_PKTINFO"). Replies therefore go out the boot interface only, never the default route.
 *    test/boot/dhcp-clients.test.ts checks this with two namespaces.
 *  - unicast to serverAddress:port is delivered to `send` (a bound address beats the wildcard in
 *    the kernel's socket lookup), so both sockets feed the same handler; nothing is seen twice.
 * Both use SO_REUSEADDR so several servers (tests, lab) can share port 67 on one host.
 *
 * Safety: unicast replies go only to addresses inside `subnet` (giaddr, ciaddr); anything else
 * is ignored or broadcast on the boot interface, so forged packets can't aim us elsewhere.
 */
import dgram from 'node:dgram';
import { log } from '../../log.js';
import {
  BOOTREPLY,
  BOOTREQUEST,
  DEFAULT_MAX_MESSAGE,
  DhcpParseError,
  FLAG_BROADCAST,
  MsgType,
  Opt,
  decodePacket,
  encodePacket,
  inSubnet,
  intToIp,
  ipToInt,
  isIpv4,
  macToString,
  optIps,
  optStr,
  optU32,
  optU8,
  parseCidr,
  readArchOpt,
  readIpOpt,
  readStrOpt,
  readUuidOpt,
  type DhcpPacket,
  type Subnet,
} from './packet.js';

export interface DhcpRequestInfo {
  mac: string; // aa:bb:cc:dd:ee:ff lowercase
  msgType: number;
  xid: number;
  giaddr: string;
  ciaddr: string;
  requestedIp?: string;
  serverId?: string;
  hostname?: string;
  vendorClass?: string;
  clientArch?: number; // opt 93
  uuid?: string; // opt 97
  paramRequestList: number[];
}

export interface DhcpReservation {
  ip: string;
  hostname?: string;
  bootFile?: string; // opt 67 + BOOTP file
  nextServer?: string; // siaddr + opt 66; default = server address
}

/** null = unknown/ignored MAC: not served. */
export type DhcpLookup = (info: DhcpRequestInfo) => Promise<DhcpReservation | null>;

export type DhcpEvent = {
  type: 'offer' | 'ack' | 'nak' | 'release' | 'decline' | 'inform' | 'unknown' | 'malformed' | 'ignored';
  mac?: string;
  ip?: string;
  reason?: string;
  info?: DhcpRequestInfo;
};

export interface DhcpStats {
  received: number;
  malformed: number;
  offers: number;
  acks: number;
  naks: number;
  ignored: number;
}

export interface DhcpServerOptions {
  serverAddress: string;
  port?: number;
  listenAddress?: string;
  subnet: string;
  router?: string;
  dns?: string[];
  domain?: string;
  leaseSeconds?: number;
  lookup: DhcpLookup;
  pool?: { start: string; end: string };
  onEvent?: (ev: DhcpEvent) => void;
  /**
   * True when the controller has a permanent neighbour entry for this client's address (the lab pins
   * every board's): then an OFFER/ACK goes unicast to yiaddr, as RFC 2131 4.1 asks, and only that
   * board's port sees it. Otherwise (no way to write an ARP entry from Node) it is broadcast.
   */
  pinned?: (mac: string, ip: string) => boolean;
}

const OFFER_HOLD_MS = 60_000; // an offered pool address is kept for the client this long
const DECLINE_HOLD_MS = 10 * 60_000; // an address a client found in use stays out of the pool
const MAX_INFLIGHT = 1024; // pending lookups; beyond this we shed load instead of queueing
const MAX_REPLY = 1500 - 28; // never exceed an Ethernet MTU, whatever option 57 says
const REQUIRED_OPTS: ReadonlySet<number> = new Set([Opt.MSG_TYPE, Opt.SERVER_ID]);
const REPLY_PRIORITY = [Opt.MSG_TYPE, Opt.SERVER_ID, Opt.LEASE_TIME, Opt.TFTP_SERVER, Opt.BOOTFILE, Opt.SUBNET_MASK, Opt.MESSAGE];
const ZERO = '0.0.0.0';
const LIMITED_BROADCAST = '255.255.255.255';

// ------------------------------------------------------------------ discovery pool

interface Lease {
  ip: number;
  expires: number;
  bound: boolean;
}

/** In-memory leases for unknown boards. Memory is bounded by the pool size: one entry per address. */
class LeasePool {
  private readonly byMac = new Map<string, Lease>();
  private readonly byIp = new Map<number, string>();
  private readonly bad = new Map<number, number>(); // declined address → usable again at
  private cursor: number;

  constructor(
    private readonly start: number,
    private readonly end: number,
    private readonly exclude: ReadonlySet<number>,
  ) {
    this.cursor = start;
  }

  private inRange(n: number): boolean {
    return n >= this.start && n <= this.end && !this.exclude.has(n);
  }

  /** Free = in range, not declined recently, not held by a live lease of another MAC. */
  private isFree(n: number, mac: string, now: number): boolean {
    if (!this.inRange(n)) return false;
    const until = this.bad.get(n);
    if (until !== undefined) {
      if (until > now) return false;
      this.bad.delete(n);
    }
    const owner = this.byIp.get(n);
    if (owner === undefined || owner === mac) return true;
    const l = this.byMac.get(owner);
    if (l && l.ip === n && l.expires > now) return false;
    this.drop(owner); // expired: reclaim
    return true;
  }

  private drop(mac: string): void {
    const l = this.byMac.get(mac);
    if (!l) return;
    this.byMac.delete(mac);
    if (this.byIp.get(l.ip) === mac) this.byIp.delete(l.ip);
  }

  private assign(mac: string, n: number, expires: number, bound: boolean): void {
    const old = this.byMac.get(mac);
    if (old && old.ip !== n) this.drop(mac);
    this.byMac.set(mac, { ip: n, expires, bound });
    this.byIp.set(n, mac);
  }

  /** Address to offer: the MAC's current one, else the requested one if free, else the next free. */
  offer(mac: string, requested: string | undefined, now = Date.now()): string | null {
    const cur = this.byMac.get(mac);
    let pick: number | undefined;
    if (cur && this.isFree(cur.ip, mac, now)) pick = cur.ip;
    else if (requested && this.isFree(ipToInt(requested), mac, now)) pick = ipToInt(requested);
    else {
      const size = this.end - this.start + 1;
      for (let i = 0; i < size; i++) {
        const n = this.start + ((this.cursor - this.start + i) % size);
        if (this.isFree(n, mac, now)) {
          pick = n;
          this.cursor = n + 1 > this.end ? this.start : n + 1;
          break;
        }
      }
    }
    if (pick === undefined) return null;
    const keep = cur && cur.ip === pick && cur.bound ? cur.expires : 0;
    this.assign(mac, pick, Math.max(keep, now + OFFER_HOLD_MS), cur?.ip === pick ? cur.bound : false);
    return intToIp(pick);
  }

  /** REQUEST: bind if the address is ours to give to this MAC. */
  bind(mac: string, ip: string, leaseMs: number, now = Date.now()): boolean {
    const n = ipToInt(ip);
    if (!this.isFree(n, mac, now)) return false;
    this.assign(mac, n, now + leaseMs, true);
    return true;
  }

  release(mac: string, ip: string): void {
    const l = this.byMac.get(mac);
    if (l && intToIp(l.ip) === ip) this.drop(mac);
  }

  decline(mac: string, ip: string, now = Date.now()): void {
    const n = ipToInt(ip);
    if (!this.inRange(n)) return;
    this.bad.set(n, now + DECLINE_HOLD_MS);
    const owner = this.byIp.get(n);
    if (owner !== undefined) this.drop(owner);
    this.drop(mac);
  }

  /** The client picked another server: give back an address we only offered. */
  forgetOffer(mac: string): void {
    if (this.byMac.get(mac)?.bound === false) this.drop(mac);
  }
}

// ------------------------------------------------------------------ server

type Resolved = { ip: string; res: DhcpReservation | null } | { skip: DhcpEvent };

export class DhcpServer {
  /** Counters since start. `ignored` includes 'unknown' (a MAC nobody enrolled gets no reply). */
  readonly stats: DhcpStats = { received: 0, malformed: 0, offers: 0, acks: 0, naks: 0, ignored: 0 };

  private readonly port: number;
  private readonly subnet: Subnet;
  private readonly leaseSeconds: number;
  private readonly pool: LeasePool | null;
  private recv: dgram.Socket | null = null;
  private send: dgram.Socket | null = null;
  private inflight = 0;
  /** Option values that are the same in every reply, encoded once. */
  private readonly fixed: FixedOptions;

  constructor(private readonly o: DhcpServerOptions) {
    if (!isIpv4(o.serverAddress)) throw new Error(`invalid serverAddress: ${o.serverAddress}`);
    if (o.listenAddress !== undefined && !isIpv4(o.listenAddress)) throw new Error(`invalid listenAddress: ${o.listenAddress}`);
    for (const a of [o.router, ...(o.dns ?? [])]) if (a !== undefined && !isIpv4(a)) throw new Error(`invalid address: ${a}`);
    this.port = o.port ?? 67;
    if (!Number.isInteger(this.port) || this.port < 1 || this.port > 65534) throw new Error(`invalid port: ${o.port}`);
    this.subnet = parseCidr(o.subnet);
    this.leaseSeconds = o.leaseSeconds ?? 3600;
    this.fixed = fixedOptions(o, this.subnet, this.leaseSeconds);
    if (o.pool) {
      const s = ipToInt(o.pool.start);
      const e = ipToInt(o.pool.end);
      if (s > e || !inSubnet(s, this.subnet) || !inSubnet(e, this.subnet)) throw new Error('pool must be a range inside subnet');
      const exclude = new Set([this.subnet.network, this.subnet.broadcast, ipToInt(o.serverAddress)]);
      if (o.router) exclude.add(ipToInt(o.router));
      this.pool = new LeasePool(s, e, exclude);
    } else this.pool = null;
  }

  async start(): Promise<void> {
    if (this.send) throw new Error('DHCP server already started');
    const listen = this.o.listenAddress ?? ZERO;
    this.send = await this.bindSocket(this.o.serverAddress);
    this.send.setBroadcast(true);
    if (listen !== this.o.serverAddress) {
      try {
        this.recv = await this.bindSocket(listen);
      } catch (err) {
        await this.stop();
        throw err;
      }
    }
    log.info({ serverAddress: this.o.serverAddress, listen, port: this.port }, 'dhcp: listening');
  }

  /** Where it answers from. */
  address(): { address: string; port: number } {
    return { address: this.o.serverAddress, port: this.port };
  }

  async stop(): Promise<void> {
    const socks = [this.recv, this.send].filter((s): s is dgram.Socket => s !== null);
    this.recv = this.send = null;
    await Promise.all(socks.map((s) => new Promise<void>((r) => s.close(() => r()))));
  }

  private bindSocket(address: string): Promise<dgram.Socket> {
    return new Promise((resolve, reject) => {
      const s = dgram.createSocket({ type: 'udp4', reuseAddr: true });
      const fail = (err: Error): void => {
        s.close();
        reject(new Error(`dhcp: cannot bind ${address}:${this.port}: ${err.message}`));
      };
      s.once('error', fail);
      s.bind({ address, port: this.port }, () => {
        s.off('error', fail);
        s.setRecvBufferSize(1 << 20); // a rack powering on at once: absorb the burst (the kernel caps it at rmem_max)
        s.on('error', (err) => log.warn({ err }, 'dhcp: socket error'));
        s.on('message', (buf, rinfo) => this.onMessage(buf, rinfo));
        resolve(s);
      });
    });
  }

  private emit(ev: DhcpEvent): void {
    if (ev.type === 'malformed') this.stats.malformed++;
    if (ev.type === 'ignored' || ev.type === 'unknown') this.stats.ignored++;
    if (log.isLevelEnabled('debug')) log.debug({ dhcp: { ...ev, info: undefined } }, `dhcp: ${ev.type}`); // no copy per packet unless logged
    try {
      this.o.onEvent?.(ev);
    } catch (err) {
      log.warn({ err }, 'dhcp: onEvent handler threw'); // a listener bug must not stop the server
    }
  }

  private onMessage(buf: Buffer, rinfo: dgram.RemoteInfo): void {
    this.stats.received++;
    let pkt: DhcpPacket;
    try {
      pkt = decodePacket(buf);
      if (pkt.op !== BOOTREQUEST) throw new DhcpParseError(`op ${pkt.op} is not BOOTREQUEST`);
    } catch (err) {
      const reason = err instanceof DhcpParseError ? err.message : `decode error: ${String(err)}`;
      this.emit({ type: 'malformed', reason: `${reason} from ${rinfo.address}:${rinfo.port}` });
      return;
    }
    const mac = pkt.htype === 1 && pkt.hlen === 6 ? macToString(pkt.chaddr) : undefined;
    const mt = pkt.options.get(Opt.MSG_TYPE)?.[0];
    if (!mac) return this.emit({ type: 'ignored', reason: `unsupported hardware type ${pkt.htype}/${pkt.hlen}` });
    if (mt === undefined) return this.emit({ type: 'ignored', mac, reason: 'BOOTP request without DHCP message type' });
    if (pkt.giaddr !== ZERO && !inSubnet(pkt.giaddr, this.subnet)) {
      return this.emit({ type: 'ignored', mac, reason: `relay ${pkt.giaddr} outside ${this.o.subnet}` });
    }
    if (this.inflight >= MAX_INFLIGHT) return this.emit({ type: 'ignored', mac, reason: 'server busy' });
    const info = requestInfo(pkt, mac, mt);
    this.inflight++;
    void this.handleSafely(pkt, info);
  }

  private async handleSafely(pkt: DhcpPacket, info: DhcpRequestInfo): Promise<void> {
    try {
      await this.handle(pkt, info);
    } catch (err) {
      log.error({ err }, 'dhcp: handler failed');
      this.emit({ type: 'ignored', mac: info.mac, reason: `internal error: ${String(err)}`, info });
    } finally {
      this.inflight--;
    }
  }

  private async handle(pkt: DhcpPacket, info: DhcpRequestInfo): Promise<void> {
    switch (info.msgType) {
      case MsgType.DISCOVER:
        return this.onDiscover(pkt, info);
      case MsgType.REQUEST:
        return this.onRequest(pkt, info);
      case MsgType.INFORM:
        return this.onInform(pkt, info);
      case MsgType.RELEASE:
      case MsgType.DECLINE:
        return this.onReleaseOrDecline(info);
      default:
        return this.emit({ type: 'ignored', mac: info.mac, reason: `message type ${info.msgType} not handled by a server`, info });
    }
  }

  /** Reservation from inventory, else pool (DISCOVER only allocates). */
  private async resolve(info: DhcpRequestInfo, allocate: boolean): Promise<Resolved> {
    let res: DhcpReservation | null;
    try {
      res = await this.o.lookup(info);
    } catch (err) {
      return { skip: { type: 'ignored', mac: info.mac, reason: `lookup failed: ${String(err)}`, info } };
    }
    if (res) {
      if (!isIpv4(res.ip) || !inSubnet(res.ip, this.subnet)) {
        return { skip: { type: 'ignored', mac: info.mac, reason: `reserved ${res.ip} not in ${this.o.subnet}`, info } };
      }
      return { ip: res.ip, res };
    }
    if (!this.pool) return { skip: { type: 'unknown', mac: info.mac, info } };
    if (!allocate) return { ip: '', res: null };
    const ip = this.pool.offer(info.mac, info.requestedIp && isIpv4(info.requestedIp) ? info.requestedIp : undefined);
    if (!ip) return { skip: { type: 'ignored', mac: info.mac, reason: 'pool exhausted', info } };
    return { ip, res: null };
  }

  private async onDiscover(pkt: DhcpPacket, info: DhcpRequestInfo): Promise<void> {
    const r = await this.resolve(info, true);
    if ('skip' in r) return this.emit(r.skip);
    this.reply(pkt, info, MsgType.OFFER, r.ip, r.res);
  }

  private async onRequest(pkt: DhcpPacket, info: DhcpRequestInfo): Promise<void> {
    const { mac, serverId } = info;
    if (serverId !== undefined && serverId !== this.o.serverAddress) {
      this.pool?.forgetOffer(mac);
      return this.emit({ type: 'ignored', mac, reason: `client selected server ${serverId}`, info });
    }
    // SELECTING/INIT-REBOOT carry option 50; RENEWING/REBINDING carry ciaddr instead.
    const wanted = info.requestedIp ?? (info.ciaddr !== ZERO ? info.ciaddr : undefined);
    const r = await this.resolve(info, false);
    if ('skip' in r) return this.emit(r.skip);
    if (!wanted) return this.nak(pkt, info, 'REQUEST without requested address or ciaddr');
    if (r.res) {
      if (wanted !== r.ip) return this.nak(pkt, info, `requested ${wanted}, reserved ${r.ip}`);
      return this.reply(pkt, info, MsgType.ACK, r.ip, r.res);
    }
    // Pool client: ACK if the address is (or can become) this MAC's lease.
    const ms = this.leaseSeconds * 1000;
    if (!this.pool || !inSubnet(wanted, this.subnet) || !this.pool.bind(mac, wanted, ms)) {
      return this.nak(pkt, info, `${wanted} not available from pool`);
    }
    this.reply(pkt, info, MsgType.ACK, wanted, null);
  }

  private async onInform(pkt: DhcpPacket, info: DhcpRequestInfo): Promise<void> {
    const r = await this.resolve(info, false);
    if ('skip' in r) return this.emit(r.skip);
    this.reply(pkt, info, MsgType.ACK, ZERO, r.res, true);
  }

  private async onReleaseOrDecline(info: DhcpRequestInfo): Promise<void> {
    const { mac, serverId } = info;
    if (serverId !== undefined && serverId !== this.o.serverAddress) {
      return this.emit({ type: 'ignored', mac, reason: `addressed to server ${serverId}`, info });
    }
    if (info.msgType === MsgType.RELEASE) {
      if (info.ciaddr !== ZERO) this.pool?.release(mac, info.ciaddr);
      return this.emit({ type: 'release', mac, ip: info.ciaddr, info });
    }
    const ip = info.requestedIp;
    if (ip && inSubnet(ip, this.subnet)) this.pool?.decline(mac, ip);
    this.emit({ type: 'decline', mac, ...(ip ? { ip } : {}), reason: 'client reports address in use', info });
  }

  private nak(pkt: DhcpPacket, info: DhcpRequestInfo, reason: string): void {
    const options = new Map<number, Buffer>([
      [Opt.MSG_TYPE, MSG_TYPE_OPT[MsgType.NAK]!],
      [Opt.SERVER_ID, this.fixed.serverId],
      [Opt.MESSAGE, optStr(reason.slice(0, 200))],
    ]);
    // RFC 2131 4.3.2: NAKs are broadcast (relays: set the broadcast bit so the relay broadcasts).
    const out = replyHeader(pkt, ZERO, ZERO, { siaddr: ZERO, sname: '', file: '', flags: pkt.flags | FLAG_BROADCAST }, options);
    this.stats.naks++;
    this.transmit(out, pkt, true);
    this.emit({ type: 'nak', mac: info.mac, ...(info.requestedIp ? { ip: info.requestedIp } : {}), reason, info });
  }

  /** OFFER, ACK or (inform=true) the INFORM ACK: no lease time, yiaddr 0, ciaddr echoed. */
  private reply(pkt: DhcpPacket, info: DhcpRequestInfo, type: number, ip: string, res: DhcpReservation | null, inform = false): void {
    const next = res?.nextServer ?? this.o.serverAddress;
    const boot = res?.bootFile !== undefined || res?.nextServer !== undefined;
    const f = this.fixed;
    const avail = new Map<number, Buffer>();
    avail.set(Opt.SUBNET_MASK, f.mask);
    if (f.router) avail.set(Opt.ROUTER, f.router);
    if (f.dns) avail.set(Opt.DNS, f.dns);
    if (res?.hostname) avail.set(Opt.HOSTNAME, optStr(res.hostname));
    if (f.domain) avail.set(Opt.DOMAIN, f.domain);
    avail.set(Opt.BROADCAST, f.broadcast);
    if (boot) avail.set(Opt.TFTP_SERVER, next === this.o.serverAddress ? f.serverName : optStr(next));
    if (res?.bootFile) avail.set(Opt.BOOTFILE, optStr(res.bootFile));
    // PXE: echo the class only to a PXE client that asked for it back (RFC 4578 / PXE 2.1 §2.2).
    if (info.vendorClass?.startsWith('PXEClient') && info.paramRequestList.includes(Opt.VENDOR_CLASS)) {
      avail.set(Opt.VENDOR_CLASS, optStr('PXEClient'));
    }

    // Wire order: header options, what the client asked for in its option 55 order, the boot
    // options (always sent, even unasked), then the rest. Room under option 57 goes to
    // REPLY_PRIORITY first, so a long hostname can't squeeze out the boot file.
    const options = new Map<number, Buffer>([
      [Opt.MSG_TYPE, MSG_TYPE_OPT[type]!],
      [Opt.SERVER_ID, f.serverId],
    ]);
    if (!inform) options.set(Opt.LEASE_TIME, f.leaseTime);
    for (const code of info.paramRequestList) take(options, avail, code);
    take(options, avail, Opt.TFTP_SERVER);
    take(options, avail, Opt.BOOTFILE);
    for (const code of avail.keys()) take(options, avail, code);

    const ciaddr = type === MsgType.ACK ? pkt.ciaddr : ZERO;
    // siaddr is "the next server to use in bootstrap"; the file field is left empty when the
    // path doesn't fit its 128 bytes (option 67 still carries it).
    const hdr = { siaddr: next, sname: res?.bootFile ? next : '', file: res?.bootFile ?? '', flags: pkt.flags };
    const out = replyHeader(pkt, ciaddr, ip, hdr, options);
    if (type === MsgType.OFFER) this.stats.offers++;
    else this.stats.acks++;
    this.transmit(out, pkt, false, info.mac);
    const evType = inform ? 'inform' : type === MsgType.OFFER ? 'offer' : 'ack';
    this.emit({ type: evType, mac: info.mac, ...(ip !== ZERO ? { ip } : {}), info });
  }

  /** Where a reply goes (RFC 2131 4.1), restricted to our subnet; see the header comment. */
  private transmit(out: DhcpPacket, req: DhcpPacket, isNak: boolean, mac?: string): void {
    const sock = this.send;
    if (!sock) return;
    const maxLen = Math.min(MAX_REPLY, Math.max(DEFAULT_MAX_MESSAGE, (req.options.get(Opt.MAX_MESSAGE_SIZE)?.readUInt16BE(0) ?? 0) - 28));
    const buf = encodePacket(out, { maxLength: maxLen, required: REQUIRED_OPTS, priority: REPLY_PRIORITY });
    let address = LIMITED_BROADCAST;
    let port = this.port + 1;
    if (req.giaddr !== ZERO) {
      address = req.giaddr; // relay agent listens on the server port
      port = this.port;
    } else if (!isNak && req.ciaddr !== ZERO && !(req.flags & FLAG_BROADCAST) && inSubnet(req.ciaddr, this.subnet)) {
      address = req.ciaddr;
    } else if (!isNak && mac && out.yiaddr !== ZERO && !(req.flags & FLAG_BROADCAST) && inSubnet(out.yiaddr, this.subnet) && this.o.pinned?.(mac, out.yiaddr)) {
      address = out.yiaddr; // its link address is pinned: no ARP, the frame goes to that board alone
    }
    // Else, without a configured address the client can't receive unicast (we can't write its ARP entry
    // from Node), so yiaddr-unicast from RFC 2131 4.1 is replaced by broadcast on the boot link.
    sock.send(buf, port, address, onSent);
  }
}

/** One callback for every send, not a closure per packet; the error names the address and port. */
function onSent(err: Error | null): void {
  if (err) log.warn({ err }, 'dhcp: send failed');
}

/** Option 53's value per message type, shared by every reply (encodePacket only reads values). */
const MSG_TYPE_OPT: readonly Buffer[] = Array.from({ length: MsgType.INFORM + 1 }, (_, t) => optU8(t));

interface FixedOptions {
  serverId: Buffer;
  serverName: Buffer; // option 66 when the next server is this one
  leaseTime: Buffer;
  mask: Buffer;
  broadcast: Buffer;
  router?: Buffer;
  dns?: Buffer;
  domain?: Buffer;
}

function fixedOptions(o: DhcpServerOptions, subnet: Subnet, leaseSeconds: number): FixedOptions {
  return {
    serverId: optIps([o.serverAddress]),
    serverName: optStr(o.serverAddress),
    leaseTime: optU32(leaseSeconds),
    mask: optU32(subnet.mask),
    broadcast: optU32(subnet.broadcast),
    ...(o.router ? { router: optIps([o.router]) } : {}),
    ...(o.dns?.length ? { dns: optIps(o.dns) } : {}),
    ...(o.domain ? { domain: optStr(o.domain) } : {}),
  };
}

/** Moves option `code` from what the reply can say into what it says, once, keeping insertion order. */
function take(options: Map<number, Buffer>, avail: Map<number, Buffer>, code: number): void {
  const v = avail.get(code);
  if (v && !options.has(code)) options.set(code, v);
}

function replyHeader(req: DhcpPacket, ciaddr: string, yiaddr: string, h: Pick<DhcpPacket, 'siaddr' | 'sname' | 'file' | 'flags'>, options: Map<number, Buffer>): DhcpPacket {
  return {
    op: BOOTREPLY,
    htype: req.htype,
    hlen: req.hlen,
    hops: 0,
    xid: req.xid,
    secs: 0,
    flags: h.flags,
    ciaddr,
    yiaddr,
    siaddr: h.siaddr,
    giaddr: req.giaddr,
    chaddr: req.chaddr,
    sname: h.sname,
    file: h.file,
    options,
  };
}

/** The view of a request handed to lookup(). Optional PXE fields are best-effort, never fatal. */
export function requestInfo(pkt: DhcpPacket, mac: string, msgType: number): DhcpRequestInfo {
  const o = pkt.options;
  const prl = o.get(Opt.PARAM_REQUEST_LIST);
  const info: DhcpRequestInfo = {
    mac,
    msgType,
    xid: pkt.xid,
    giaddr: pkt.giaddr,
    ciaddr: pkt.ciaddr,
    paramRequestList: prl ? Array.from(prl) : [],
  };
  // Only the options present become keys (as before: no `undefined` members crossing threads).
  setIfPresent(info, 'requestedIp', readIpOpt(o.get(Opt.REQUESTED_IP)));
  setIfPresent(info, 'serverId', readIpOpt(o.get(Opt.SERVER_ID)));
  setIfPresent(info, 'hostname', readStrOpt(o.get(Opt.HOSTNAME)));
  setIfPresent(info, 'vendorClass', readStrOpt(o.get(Opt.VENDOR_CLASS)));
  setIfPresent(info, 'clientArch', readArchOpt(o.get(Opt.CLIENT_ARCH)));
  setIfPresent(info, 'uuid', readUuidOpt(o.get(Opt.UUID)));
  return info;
}

function setIfPresent<K extends keyof DhcpRequestInfo>(info: DhcpRequestInfo, key: K, value: DhcpRequestInfo[K] | undefined): void {
  if (value !== undefined) info[key] = value;
}

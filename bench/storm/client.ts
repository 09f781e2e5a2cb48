/**
 * The storm's load generator: N boards booting at once, each doing what U-Boot does (net/bootp.c,
 * net/tftp.c, v2023+): DHCP DISCOVER → OFFER → REQUEST → ACK through a relay, then TFTP of its boot
 * file (boot.scr.uimg or pxelinux.cfg/01-<mac>), which it parses for the kernel, initrd and DTB it then
 * fetches, one file at a time, from its own leased address.
 *
 * U-Boot behaviour copied here:
 *  - DHCP: DISCOVER broadcast, retransmitted after 250 ms, doubling to at most 2 s, each with a new xid
 *    (the last 4 are accepted); after an OFFER, REQUEST and 5 s for the ACK, else DISCOVER again; gives
 *    up (28 s) after (3 + CONFIG_NET_RETRY_COUNT * 5) s. Vendor class "U-Boot.armv7", PXE arch 0x15.
 *    A relay is simulated: we bind <relay>:67, set giaddr and hops 1, and the server answers the relay.
 *  - TFTP: RRQ with "timeout 5", "tsize 0", "blksize 1468" and, when > 1, "windowsize"; a new local port
 *    per file; 5 s timeout that resends the RRQ (or the last ACK); more than 10 timeouts in one file fail
 *    it (the count is not reset by progress, only by a block-number wrap); an out-of-order block gets
 *    one ACK of the last in-order block per gap; with a window, an ACK every `windowsize` blocks and on
 *    the last (short) block; an ERROR packet fails the file. An OACK timeout other than ours or a block
 *    size above ours is refused (error 8), as U-Boot does.
 *  - A failed file fails the board (U-Boot's `|| reset` would reboot it: a slower boot we count as failed).
 *
 * Verification: every image file's size and CRC-32 against the plan, the generated files' content
 * (a boot script past its 64-byte header, which carries a timestamp).
 *
 *   ip netns exec <ns> node --import tsx bench/storm/client.ts plan.json result.json
 */
import dgram from 'node:dgram';
import { readFileSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import dns from 'node:dns';
import { pathToFileURL } from 'node:url';
import { crc32 } from 'node:zlib';
import { BOOTREPLY, MsgType, Opt, decodePacket, encodePacket, macToString, newRequest, optIps, optStr, type DhcpPacket } from '../../src/boot/dhcp/packet.js';
import { decode, encodeAck, encodeError, encodeRrq } from '../../src/boot/tftp/packet.js';
import { udpRcvbufErrors, type BoardResult, type FileResult, type Plan, type StormBoard, type StormResult } from './plan.js';

const VENDOR_CLASS = 'U-Boot.armv7';
const PXE_ARCH_ARM32_UBOOT = 0x15;
const BOOTP_ID_CACHE = 4;

function fastLookup(host: string, opts: dns.LookupOneOptions, cb: (err: NodeJS.ErrnoException | null, address: string, family: number) => void): void {
  const family = isIP(host);
  if (family) cb(null, host, family);
  else dns.lookup(host, opts, cb);
}

class BoardFailure extends Error {
  constructor(
    message: string,
    readonly timedOut = false,
  ) {
    super(message);
  }
}

interface Lease {
  ip: string;
  serverIp: string;
  bootfile: string;
}

/** All boards share one relay socket; replies are routed to the board by xid. */
class Relay {
  private sock?: dgram.Socket;
  private readonly byXid = new Map<number, (p: DhcpPacket) => void>();

  constructor(private readonly plan: Plan) {}

  async start(): Promise<void> {
    const s = dgram.createSocket({ type: 'udp4', lookup: fastLookup });
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.bind(this.plan.dhcpPort, this.plan.relayIp, () => {
        s.off('error', reject);
        resolve();
      });
    });
    try {
      s.setRecvBufferSize(4 << 20);
    } catch {
      /* best effort */
    }
    s.on('message', (buf) => {
      let p: DhcpPacket;
      try {
        p = decodePacket(buf);
      } catch {
        return;
      }
      if (p.op !== BOOTREPLY) return;
      this.byXid.get(p.xid)?.(p);
    });
    this.sock = s;
  }

  listen(xid: number, fn: (p: DhcpPacket) => void): void {
    this.byXid.set(xid, fn);
  }

  forget(xid: number): void {
    this.byXid.delete(xid);
  }

  send(p: DhcpPacket): void {
    this.sock?.send(encodePacket(p), this.plan.dhcpPort, this.plan.serverIp);
  }

  close(): void {
    this.sock?.close();
    this.sock = undefined;
  }
}

function dhcpOptions(p: DhcpPacket): void {
  const o = p.options;
  o.set(Opt.MAX_MESSAGE_SIZE, Buffer.from([576 >> 8, 576 & 255]));
  o.set(Opt.CLIENT_ARCH, Buffer.from([0, PXE_ARCH_ARM32_UBOOT]));
  o.set(Opt.CLIENT_NDI, Buffer.from([1, 0, 0]));
  o.set(Opt.VENDOR_CLASS, optStr(VENDOR_CLASS));
  o.set(Opt.PARAM_REQUEST_LIST, Buffer.from([1, 3, 6, 12, 17]));
}

/** U-Boot's `dhcp`: resolves with the lease, or throws after its retry time. */
function dhcp(plan: Plan, relay: Relay, board: StormBoard, r: BoardResult, t0: number): Promise<Lease> {
  return new Promise<Lease>((resolve, reject) => {
    const ids: number[] = [];
    let state: 'selecting' | 'requesting' = 'selecting';
    let timeout = plan.dhcpFirstTimeoutMs;
    let timer: NodeJS.Timeout | undefined;
    let offerXid = 0;
    const start = performance.now();
    const done = (err: Error | null, lease?: Lease): void => {
      clearTimeout(timer);
      for (const x of ids) relay.forget(x);
      if (err) reject(err);
      else resolve(lease!);
    };
    const header = (type: number, xid: number): DhcpPacket => {
      const p = newRequest(board.mac, xid, type);
      p.giaddr = plan.relayIp;
      p.hops = 1;
      p.secs = Math.floor((performance.now() - start) / 1000);
      dhcpOptions(p);
      return p;
    };
    const onTimeout = (): void => {
      if (performance.now() - start >= plan.dhcpTotalMs) return done(new BoardFailure('DHCP: retry time exceeded', true));
      r.dhcpRetransmits++;
      timeout = Math.min(timeout * 2, plan.dhcpMaxTimeoutMs);
      discover();
    };
    const onReply = (p: DhcpPacket): void => {
      if (macToString(p.chaddr) !== board.mac || p.yiaddr === '0.0.0.0') return;
      const type = p.options.get(Opt.MSG_TYPE)?.[0];
      if (state === 'selecting') {
        if (type !== MsgType.OFFER) return;
        state = 'requesting';
        offerXid = p.xid;
        const req = header(MsgType.REQUEST, p.xid);
        const sid = p.options.get(Opt.SERVER_ID);
        if (sid) req.options.set(Opt.SERVER_ID, sid);
        req.options.set(Opt.REQUESTED_IP, optIps([p.yiaddr]));
        clearTimeout(timer);
        timer = setTimeout(onTimeout, plan.dhcpRequestTimeoutMs);
        relay.send(req);
      } else if (type === MsgType.ACK && p.xid === offerXid) {
        // U-Boot: option 67 first, then a non-empty BOOTP file field wins; siaddr is the TFTP server.
        const opt67 = p.options.get(Opt.BOOTFILE);
        const bootfile = p.file || (opt67 ? opt67.toString('latin1').replace(/\0+$/, '') : '');
        const serverIp = p.siaddr !== '0.0.0.0' ? p.siaddr : plan.serverIp;
        r.dhcpMs = Math.round(performance.now() - t0);
        done(null, { ip: p.yiaddr, serverIp, bootfile });
      }
    };
    const discover = (): void => {
      state = 'selecting';
      const xid = (Math.random() * 0x1_0000_0000) >>> 0;
      ids.push(xid);
      relay.listen(xid, onReply);
      if (ids.length > BOOTP_ID_CACHE) relay.forget(ids.shift()!);
      clearTimeout(timer);
      timer = setTimeout(onTimeout, timeout);
      relay.send(header(MsgType.DISCOVER, xid));
    };
    discover();
  });
}

interface Fetched {
  file: FileResult;
  /** Whole content, kept only for the small generated files we parse. */
  data?: Buffer;
  crc: number;
  /** CRC-32 of the content after its first 64 bytes (a boot script's data). */
  crcAfterHeader: number;
}

/** One U-Boot `tftpboot`: resolves with the file's size and checksum, or throws. */
function tftpGet(plan: Plan, lease: Lease, path: string, keep: boolean, r: BoardResult, deadline: number): Promise<Fetched> {
  return new Promise<Fetched>((resolve, reject) => {
    const sock = dgram.createSocket({ type: 'udp4', lookup: fastLookup });
    const timeoutS = Math.floor(plan.tftpTimeoutMs / 1000);
    const opts: Record<string, string | number> = { timeout: timeoutS, tsize: 0, blksize: plan.blksize };
    if (plan.windowsize > 1) opts.windowsize = plan.windowsize;
    const rrq = encodeRrq(path, 'octet', opts);
    let state: 'rrq' | 'oack' | 'data' = 'rrq';
    let remotePort = plan.tftpPort;
    let blksize = 512;
    let windowsize = 1;
    let cur = 0; // tftp_cur_block
    let nextAck = 1;
    let lastNack = 0;
    let timeoutCount = 0;
    let bytes = 0;
    let crc = 0;
    let crcAfter = 0;
    const chunks: Buffer[] = [];
    const t0 = performance.now();
    let finished = false;
    let timer: NodeJS.Timeout | undefined;
    let hard: NodeJS.Timeout | undefined;

    const end = (err: Error | null): void => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      clearTimeout(hard);
      const close = (): void => {
        try {
          sock.close();
        } catch {
          /* closed */
        }
      };
      // Let the final ACK leave before the socket goes.
      setImmediate(close);
      if (err) return reject(err);
      resolve({
        file: { path, bytes, ms: Math.round(performance.now() - t0), blksize, windowsize },
        data: keep ? Buffer.concat(chunks) : undefined,
        crc,
        crcAfterHeader: crcAfter,
      });
    };
    const send = (b: Buffer): void => sock.send(b, remotePort, lease.serverIp);
    const ack = (n: number): void => send(encodeAck(n));
    const onTimeout = (): void => {
      if (++timeoutCount > plan.tftpTimeoutCountMax) return end(new BoardFailure(`TFTP ${path}: retry count exceeded`, true));
      r.tftpTimeouts++;
      timer = setTimeout(onTimeout, plan.tftpTimeoutMs);
      if (state === 'rrq') send(rrq);
      else ack(cur);
    };
    const refuse = (why: string): void => {
      send(encodeError(8, 'Option Negotiation Failed'));
      end(new BoardFailure(`TFTP ${path}: ${why}`));
    };

    sock.on('error', (e) => end(new BoardFailure(`TFTP ${path}: socket: ${e.message}`)));
    sock.on('message', (msg, rinfo) => {
      if (finished || rinfo.address !== lease.serverIp) return;
      if (state !== 'rrq' && rinfo.port !== remotePort) return;
      if (msg.length < 4) return;
      const op = msg.readUInt16BE(0);
      if (op === 3) {
        // DATA (hot path)
        const block = msg.readUInt16BE(2);
        if (block !== ((cur + 1) & 0xffff)) {
          r.outOfOrder++;
          if (lastNack !== cur) {
            r.nacks++;
            ack(cur);
            lastNack = cur;
            nextAck = (cur + windowsize) & 0xffff;
          }
          return;
        }
        cur = (cur + 1) & 0xffff;
        if (state === 'rrq') nextAck = windowsize; // the server ignored our options
        if (state !== 'data') {
          state = 'data';
          remotePort = rinfo.port;
          if (cur !== 1) return end(new BoardFailure(`TFTP ${path}: first block is not block 1`));
        }
        if (cur === 0) timeoutCount = 0; // wrapped: U-Boot forgives its timeouts
        if (timer) timer.refresh(); // U-Boot restarts its timeout on every new block
        else timer = setTimeout(onTimeout, plan.tftpTimeoutMs);
        const payload = msg.subarray(4);
        crc = crc32(payload, crc);
        if (bytes + payload.length > 64) crcAfter = crc32(bytes >= 64 ? payload : payload.subarray(64 - bytes), crcAfter);
        bytes += payload.length;
        if (keep) chunks.push(Buffer.from(payload));
        if (payload.length < blksize) {
          ack(cur);
          return end(null);
        }
        if (cur === nextAck) {
          ack(cur);
          nextAck = (nextAck + windowsize) & 0xffff;
        }
        return;
      }
      const p = decode(msg);
      if (!p.ok) return;
      if (p.packet.type === 'oack') {
        state = 'oack';
        remotePort = rinfo.port;
        const o = p.packet.options;
        if (o.blksize !== undefined) {
          blksize = Number(o.blksize);
          if (!(blksize >= 8 && blksize <= plan.blksize)) return refuse(`invalid blksize ${o.blksize}`);
        }
        if (o.timeout !== undefined && Number(o.timeout) !== timeoutS) return refuse(`invalid timeout ${o.timeout}`);
        if (o.windowsize !== undefined) windowsize = Number(o.windowsize) || 1;
        nextAck = windowsize;
        ack(0); // U-Boot does not restart its timer on an OACK
      } else if (p.packet.type === 'error') {
        end(new BoardFailure(`TFTP ${path}: error ${p.packet.code} "${p.packet.message}"`));
      }
    });
    sock.bind(0, lease.ip, () => {
      timer = setTimeout(onTimeout, plan.tftpTimeoutMs);
      const left = deadline - performance.now();
      hard = setTimeout(() => end(new BoardFailure(`TFTP ${path}: run deadline`, true)), Math.max(0, left));
      send(rrq);
    });
  });
}

/** The TFTP paths a boot script's `tftpboot` lines load, in order. */
export function scriptFiles(uimage: Buffer): string[] {
  // 64-byte header, then the part-length table (one part, ended by 0): 8 bytes.
  const text = uimage.subarray(72).toString('utf8');
  return [...text.matchAll(/^tftpboot\s+\S+\s+(\S+)/gm)].map((m) => m[1]!);
}

/** kernel, initrd, fdt of a pxelinux config's (first) label, relative to the config's directory prefix. */
export function pxelinuxFiles(cfg: Buffer): string[] {
  const text = cfg.toString('utf8');
  const get = (k: string): string | undefined => new RegExp(`^\\s*${k}\\s+(\\S+)`, 'm').exec(text)?.[1];
  return [get('kernel'), get('initrd'), get('fdt')].filter((x): x is string => Boolean(x));
}

async function bootBoard(plan: Plan, relay: Relay, board: StormBoard, t0: number, deadline: number): Promise<BoardResult> {
  const r: BoardResult = { id: board.id, ok: false, timedOut: false, files: [], dhcpRetransmits: 0, tftpTimeouts: 0, nacks: 0, outOfOrder: 0 };
  try {
    const lease = await dhcp(plan, relay, board, r, t0);
    if (lease.ip !== board.ip) throw new BoardFailure(`DHCP gave ${lease.ip}, reserved ${board.ip}`);
    const gen = plan.generated[board.id]!;
    const dir = lease.bootfile.includes('/') ? lease.bootfile.slice(0, lease.bootfile.lastIndexOf('/') + 1) : '';
    const first = board.route === 'pxe' ? `${dir}pxelinux.cfg/01-${board.mac.replaceAll(':', '-')}` : lease.bootfile;
    if (!first) throw new BoardFailure('DHCP gave no boot file');
    const g = await tftpGet(plan, lease, first, true, r, deadline);
    r.files.push(g.file);
    const gotCrc = gen.kind === 'script' ? g.crcAfterHeader : g.crc;
    if (g.file.bytes !== gen.size || gotCrc !== gen.crc) throw new BoardFailure(`${first}: wrong content (${g.file.bytes} bytes)`);
    const next = gen.kind === 'script' ? scriptFiles(g.data!) : pxelinuxFiles(g.data!).map((p) => dir + p);
    if (!next.length) throw new BoardFailure(`${first}: names no files to load`);
    for (const path of next) {
      const f = await tftpGet(plan, lease, path, false, r, deadline);
      r.files.push(f.file);
      const want = plan.files[path];
      if (!want) throw new BoardFailure(`${path}: not a file this run expects`);
      if (f.file.bytes !== want.size || f.crc !== want.crc) throw new BoardFailure(`${path}: wrong content (${f.file.bytes} of ${want.size} bytes)`);
    }
    r.ok = true;
    r.ms = Math.round(performance.now() - t0);
  } catch (err) {
    r.error = (err as Error).message;
    r.timedOut = err instanceof BoardFailure && err.timedOut;
  }
  return r;
}

/** Power cut over: every board starts at once. */
export async function runStorm(plan: Plan): Promise<StormResult> {
  const relay = new Relay(plan);
  await relay.start();
  // Several client processes share one power cut: each waits for the same wall-clock moment.
  const lateMs = plan.startAt === undefined ? 0 : Math.max(0, Date.now() - plan.startAt);
  if (plan.startAt !== undefined) await new Promise((r) => setTimeout(r, Math.max(0, plan.startAt! - Date.now())));
  const drops0 = udpRcvbufErrors(readFileSync('/proc/net/snmp', 'utf8'));
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const deadline = t0 + plan.deadlineMs;
  try {
    const boards = await Promise.all(plan.boards.map((b) => bootBoard(plan, relay, b, t0, deadline)));
    const cpu = process.cpuUsage(cpu0);
    const wallMs = Math.round(performance.now() - t0);
    const clientRcvbufErrors = udpRcvbufErrors(readFileSync('/proc/net/snmp', 'utf8')) - drops0;
    return { boards, wallMs, clientCpuS: +((cpu.user + cpu.system) / 1e6).toFixed(2), clientRcvbufErrors, clientProcesses: 1, clientStartLateMs: lateMs };
  } finally {
    relay.close();
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const [planFile, outFile] = process.argv.slice(2);
  if (!planFile || !outFile) throw new Error('usage: client.ts plan.json result.json');
  const plan = JSON.parse(readFileSync(planFile, 'utf8')) as Plan;
  const result = await runStorm(plan);
  writeFileSync(outFile, JSON.stringify(result));
  process.exit(0);
}

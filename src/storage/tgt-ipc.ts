import { connect } from 'node:net';
import { endianness } from 'node:os';

/**
 * A client for tgtd's management socket, the channel tgtadm itself uses, so that requests carrying a
 * CHAP secret never put it in a process's argv (`tgtadm --password S` is readable by anyone through
 * /proc/<pid>/cmdline while it runs).
 *
 * The protocol, from tgt 1.0.85 (Debian 12's `tgt 1:1.0.85-1+deb12u1`; unchanged up to 1.0.97),
 * usr/tgtadm.h, usr/tgtadm.c (ipc_mgmt_connect / ipc_mgmt_req / ipc_mgmt_rsp), usr/mgmt.c
 * (mtask_recv_send_handler, account_mgmt), and checked with strace against tgtadm:
 * - one request per connection to the filesystem socket `/var/run/tgtd/socket.<control port>`
 *   (`$TGT_IPC_SOCKET.<port>` when that is set, for tgtd and tgtadm alike);
 * - the client writes `struct tgtadm_req` (120 bytes, native byte order) then the parameter string:
 *   `key=value` pairs joined by ',' with a terminating NUL (tgtd parses it with strstr/strchr);
 * - tgtd answers `struct tgtadm_rsp` {u32 err; u32 len} where len counts those 8 bytes plus the
 *   NUL-terminated text that follows (only on success), then closes the connection.
 * tgtd accepts only peers with its own uid and gid (mgmt.c ipc_perm) and drops requests whose
 * parameter string exceeds 8 KiB (MAX_MGT_BUFSIZE): both show as a connection closed without a reply.
 */

// enum tgtadm_mode / enum tgtadm_op (usr/tgtadm.h), keyed by tgtadm's --mode / --op words.
const MODES = { system: 0, target: 1, logicalunit: 2, portal: 3, lld: 4, session: 5, connection: 6, account: 7 } as const;
const OPS = { new: 0, delete: 1, show: 2, bind: 3, unbind: 4, update: 5, stat: 6, start: 7, stop: 8 } as const;
export type TgtMode = keyof typeof MODES;
export type TgtOp = keyof typeof OPS;

/**
 * tgtadm's texts for enum tgtadm_errno (usr/tgtadm_error.h, usr/tgtadm.c tgtadm_strerror), indexed by
 * value, so errors match the same regexes as tgtadm's stderr did (e.g. /can't find the account/).
 */
const ERRORS = [
  'success', 'unknown error', 'out of memory', "can't find the driver", "can't find the target",
  "can't find the logical unit", "can't find the session", "can't find the connection", "can't find the binding",
  'this target already exists', 'this logical unit number already exists', 'this binding already exists',
  'this access control rule already exists', 'this access control rule does not exist', 'this account already exists',
  "can't find the account", 'too many accounts', 'invalid request', 'this target already has an outgoing account',
  'this target is still active', 'this logical unit is still active', 'this driver is busy',
  "this operation isn't supported", 'unknown parameter', 'this device has Prevent Removal set',
]; // prettier-ignore

export function tgtadmStrerror(code: number): string {
  return ERRORS[code] ?? `(unknown tgtadm_errno ${code})`;
}

/*
 * struct tgtadm_req byte offsets. Every u64 already falls on an 8-byte offset, so there is no padding
 * on x86_64, arm64 or the 32-bit ABIs: 120 bytes on all of them.
 */
const REQ = { mode: 0, op: 4, lld: 8, len: 72, tid: 76, sid: 80, lun: 88, cid: 96, hostNo: 100, deviceType: 104, acDir: 108, pack: 112, force: 116, size: 120 } as const;
const LLD_NAME_LEN = 64;
const RSP_SIZE = 8;
const MAX_PARAMS = 8 * 1024;

export interface TgtRequest {
  mode: TgtMode;
  op: TgtOp;
  /** Target id; tgtadm's default (-1, i.e. GLOBAL_TID) when absent. */
  tid?: number;
  /** tgtadm's --outgoing: ac_dir = ACCOUNT_TYPE_OUTGOING (bind/unbind only; tgtd ignores it on `new`). */
  outgoing?: boolean;
  force?: boolean;
  /** Low-level driver; default 'iscsi' (as our tgtadm calls pass --lld iscsi). */
  lld?: string;
  /** `key=value` pairs, sent in insertion order (tgtd's account parser needs user before password). */
  params?: Record<string, string>;
}

export interface TgtReply {
  /** enum tgtadm_errno: 0 is success. */
  code: number;
  /** The reply text on success; tgtadm's message for the code otherwise. */
  text: string;
}

export class TgtIpcError extends Error {
  constructor(
    message: string,
    /** enum tgtadm_errno when tgtd answered with an error; undefined for connection failures. */
    readonly tgtCode?: number,
  ) {
    super(message);
    this.name = 'TgtIpcError';
  }
}

export class TgtIpc {
  readonly socketPath: string;

  constructor(
    readonly controlPort: number,
    private readonly timeoutMs = 15_000,
  ) {
    this.socketPath = `${process.env.TGT_IPC_SOCKET ?? '/var/run/tgtd/socket'}.${controlPort}`;
  }

  /**
   * Sends one request. Resolves with tgtd's answer, error codes included; rejects only when there is
   * no answer (no tgtd, refused peer, timeout). Messages never contain parameter values.
   */
  request(req: TgtRequest): Promise<TgtReply> {
    const head = this.header(req);
    const body = encodeParams(req.params);
    head.writeUInt32LE(REQ.size + body.length, REQ.len);
    const what = `tgtd (control port ${this.controlPort}) ${req.mode} ${req.op}`;
    return new Promise<TgtReply>((resolve, reject) => {
      const chunks: Buffer[] = [];
      let got = 0;
      let settled = false;
      const finish = (err: Error | null, reply?: TgtReply) => {
        if (settled) return;
        settled = true;
        sock.destroy();
        if (err) reject(err);
        else resolve(reply!);
      };
      const sock = connect(this.socketPath);
      sock.setTimeout(this.timeoutMs, () => finish(new TgtIpcError(`${what}: no reply within ${this.timeoutMs} ms`)));
      sock.once('connect', () => sock.write(body.length ? Buffer.concat([head, body]) : head));
      sock.on('data', (d: Buffer) => {
        chunks.push(d);
        got += d.length;
        if (got < RSP_SIZE) return;
        const all = Buffer.concat(chunks);
        const code = all.readUInt32LE(0);
        const len = all.readUInt32LE(4);
        if (code !== 0) return finish(null, { code, text: tgtadmStrerror(code) });
        if (got < len) return;
        // The text ends with the NUL concat_buf_finish counts in len.
        finish(null, { code, text: all.subarray(RSP_SIZE, len).toString('utf8').replace(/\0+$/, '') });
      });
      sock.once('error', (err: NodeJS.ErrnoException) => {
        const hint = err.code === 'ENOENT' || err.code === 'ECONNREFUSED' ? `: is a tgtd running with -C ${this.controlPort}?` : '';
        finish(new TgtIpcError(`${what}: can't connect to tgtd at ${this.socketPath} (${err.code ?? err.message})${hint}`));
      });
      sock.once('close', () =>
        finish(new TgtIpcError(`${what}: tgtd closed the connection without a full reply (same uid and gid as tgtd needed; request at most ${MAX_PARAMS} bytes)`)),
      );
    });
  }

  /** A CHAP account (global in tgtd; bind it to a target to use it). The secret travels over the socket only. */
  async newAccount(user: string, password: string): Promise<void> {
    // account_mgmt takes the user up to the first ',' and the password to the end of the string.
    if (!user || user.includes(',')) throw new TgtIpcError(`invalid CHAP user ${JSON.stringify(user)}: empty or contains ','`);
    if (!password) throw new TgtIpcError(`empty CHAP secret for ${user}`);
    await this.ok({ mode: 'account', op: 'new', params: { user, password } }, user);
  }

  /** Binds an account to a target as its incoming (initiator → target) or outgoing (mutual CHAP) account. */
  async bindAccount(tid: number, user: string, opts: { outgoing?: boolean } = {}): Promise<void> {
    await this.ok({ mode: 'account', op: 'bind', tid, outgoing: opts.outgoing, params: { user } }, user);
  }

  private async ok(req: TgtRequest, subject: string): Promise<void> {
    const r = await this.request(req);
    if (r.code !== 0) throw new TgtIpcError(`tgtd (control port ${this.controlPort}) ${req.mode} ${req.op} ${subject}: ${r.text}`, r.code);
  }

  /** struct tgtadm_req with tgtadm's defaults for the fields we do not expose (usr/tgtadm.c main). */
  private header(req: TgtRequest): Buffer {
    // tgtd reads the struct in its own byte order; the hosts we run on (x86_64, arm64) are little-endian.
    if (endianness() !== 'LE') throw new TgtIpcError('TgtIpc supports little-endian hosts only');
    const lld = Buffer.from(req.lld ?? 'iscsi', 'latin1');
    if (lld.length >= LLD_NAME_LEN) throw new TgtIpcError(`lld name too long: ${req.lld}`);
    const tid = req.tid ?? -1;
    if (!Number.isInteger(tid) || tid < -1 || tid > 0x7fffffff) throw new TgtIpcError(`invalid tid ${tid}`);
    const b = Buffer.alloc(REQ.size); // zeroes: sid, cid, host_no, device_type (TYPE_DISK), pack
    b.writeUInt32LE(MODES[req.mode], REQ.mode);
    b.writeUInt32LE(OPS[req.op], REQ.op);
    lld.copy(b, REQ.lld);
    b.writeInt32LE(tid, REQ.tid);
    b.writeBigUInt64LE(0xffff_ffff_ffff_ffffn, REQ.lun); // "no LUN", as tgtadm sends it
    b.writeUInt32LE(req.outgoing ? 1 : 0, REQ.acDir);
    b.writeUInt32LE(req.force ? 1 : 0, REQ.force);
    return b;
  }
}

/** The parameter string, NUL-terminated; empty (no body) when there are no parameters, as tgtadm does. */
function encodeParams(params: Record<string, string> = {}): Buffer {
  const pairs = Object.entries(params);
  if (!pairs.length) return Buffer.alloc(0);
  for (const [k, v] of pairs) {
    if (!k || /[=,\0]/.test(k) || v.includes('\0')) throw new TgtIpcError(`invalid tgtd parameter ${JSON.stringify(k)} (or a NUL in its value)`);
  }
  const body = Buffer.from(`${pairs.map(([k, v]) => `${k}=${v}`).join(',')}\0`, 'utf8');
  if (body.length > MAX_PARAMS) throw new TgtIpcError(`tgtd parameters too long: ${body.length} bytes (tgtd accepts ${MAX_PARAMS})`);
  return body;
}

import { createServer, connect, type Socket } from 'node:net';
import ssh2 from 'ssh2';
import type { AuthContext, Connection, ServerChannel, Session, TcpipRequestInfo } from 'ssh2';
import { ESCAPE_START, scanEscape } from './escape.js';
import { ensureHostKey } from './host-key.js';
import { checkDirectTcpip, findLeaseKey, grantProblem, leaseUsable, parseGatewayUser, parsePublicKey, type GatewayLease, type Grant } from './policy.js';

export type { GatewayLease } from './policy.js';

/**
 * The SSH gateway on the controller: tenants reach their lease's board (`ssh -J <leaseId>@controller
 * root@<board-ip>`, a `direct-tcpip` channel) and its serial console (`ssh -t console+<leaseId>@controller`),
 * with the SSH keys of the lease. Publickey only; the lease is asked again on every channel and while
 * channels are open, and what it no longer grants is closed with a message.
 *
 * ssh2 stays in this file; every decision is a pure function in policy.ts and escape.ts.
 */

/** Where console output goes: the deps call it (BoardSession's Viewer maps onto it one to one). */
export interface GatewayConsoleSink {
  /** Console output. Never blocks; a viewer that falls behind is closed by the gateway. */
  data(chunk: Buffer): void;
  /** A one-line notice for this viewer (someone joined, input dropped): written to the channel's stderr. */
  notice?(text: string): void;
  /** The console went away (board removed, server stopping): the channel closes with this reason. */
  end(reason: string): void;
}

/** A viewer attached to a console: scrollback taken atomically with the attach, so nothing is missed or doubled. */
export interface GatewayConsoleAttachment {
  scrollback: Buffer;
  write(bytes: Uint8Array): Promise<void>;
  detach(): void;
}

export interface GatewayDeps {
  /** The lease's current view: asked on each authentication, each channel, and every `recheckMs` while open. */
  lease(id: string): GatewayLease | undefined;
  /** Attach to the serial console of the lease's board; undefined when it has none. */
  attachConsole(lease: GatewayLease, who: string, sink: GatewayConsoleSink): GatewayConsoleAttachment | undefined;
}

/** pino-like: the gateway logs with these four. */
export interface GatewayLog {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export interface SshGatewayOptions {
  host: string;
  /** 0 for any free port (read it back from the result). */
  port: number;
  /** ed25519 private key file, created 0600 when missing and reused after. */
  hostKeyPath: string;
  deps: GatewayDeps;
  log: GatewayLog;
  /** How the gateway is reached from outside, for the usage hint (default `<host>:<port>`). */
  publicAddress?: string;
  /** The one port of a board a jump may reach (22 in production; tests run sshd on a high port). */
  boardSshPort?: number;
  /** Open TCP connections at most; more are closed at once (default 256). */
  maxConnections?: number;
  /** Connections one client address may hold at once (default 16): one host cannot take every slot. */
  maxPerAddress?: number;
  /** A connection not authenticated by then is closed (default 30 s), as are ones that fail `maxAuthTries` times (default 6). */
  authTimeoutMs?: number;
  maxAuthTries?: number;
  /** SSH keepalive: a client silent for `keepaliveMs × keepaliveCountMax` is dropped (default 15 s × 3). */
  keepaliveMs?: number;
  keepaliveCountMax?: number;
  /** Channels (sessions + tunnels) per connection at most (default 8). */
  maxChannels?: number;
  /** Console output queued for one slow client at most, then it is closed (default 1 MiB). */
  maxBufferedBytes?: number;
  /** How often open grants are checked against the lease (default 1 s); `recheck()` checks at once. */
  recheckMs?: number;
  /** Connecting to a board gives up after this long (default 10 s). */
  connectTimeoutMs?: number;
  /**
   * An authenticated connection with no console or tunnel open for this long is closed (default 60 s):
   * a tenant's idle connections (`ssh -N`, a master left behind) must not hold slots forever.
   */
  idleMs?: number;
}

export interface SshGateway {
  host: string;
  port: number;
  /** The host public key (`ssh-ed25519 AAAA…`), to publish for known_hosts. */
  hostPublicKey: string;
  stats(): { connections: number; authenticated: number; channels: number; refusedConnections: number };
  /** Check every open grant against its lease now (call on lease release / reimage). */
  recheck(): void;
  close(): Promise<void>;
}

interface OpenChannel {
  kind: 'console' | 'tunnel' | 'hint';
  /** Resolves when the client has closed the channel too (or after a grace period): only then may the connection go. */
  close(reason: string): Promise<void>;
}

interface ConnState {
  socket: Socket;
  client?: Connection;
  grant?: Grant;
  authTimer: NodeJS.Timeout;
  idleTimer?: NodeJS.Timeout;
  failures: number;
  channels: Set<OpenChannel>;
  ended: boolean;
}

export async function startSshGateway(o: SshGatewayOptions): Promise<SshGateway> {
  const log = o.log;
  const hostKey = await ensureHostKey(o.hostKeyPath);
  if (hostKey.created) log.info({ path: o.hostKeyPath }, 'ssh gateway: new host key created');
  const boardPort = o.boardSshPort ?? 22;
  const maxConnections = o.maxConnections ?? 256;
  const maxPerAddress = o.maxPerAddress ?? 16;
  const authTimeoutMs = o.authTimeoutMs ?? 30_000;
  const maxAuthTries = o.maxAuthTries ?? 6;
  const maxChannels = o.maxChannels ?? 8;
  const maxBuffered = o.maxBufferedBytes ?? 1024 * 1024;
  const connectTimeoutMs = o.connectTimeoutMs ?? 10_000;
  const idleMs = o.idleMs ?? 60_000;

  const conns = new Set<ConnState>();
  // ssh2 names a connection by the peer's address; the TCP socket is ours (auth timer, bound, close).
  const byPeer = new Map<string, ConnState>();
  let refusedConnections = 0;

  const ssh = new ssh2.Server({
    hostKeys: [hostKey.privateKey],
    ident: 'DozenCloud',
    keepaliveInterval: o.keepaliveMs ?? 15_000,
    keepaliveCountMax: o.keepaliveCountMax ?? 3,
  });

  /** Channels come and go through these two: with none open, the idle clock runs. */
  const addChannel = (st: ConnState, ch: OpenChannel) => {
    st.channels.add(ch);
    clearTimeout(st.idleTimer);
  };
  const dropChannel = (st: ConnState, ch: OpenChannel) => {
    st.channels.delete(ch);
    watchIdle(st);
  };
  const watchIdle = (st: ConnState) => {
    clearTimeout(st.idleTimer);
    if (st.ended || !st.grant || st.channels.size) return;
    st.idleTimer = setTimeout(() => endConn(st, `idle: nothing open for ${idleMs / 1000} s`), idleMs);
  };

  const endConn = (st: ConnState, why: string) => {
    if (st.ended) return;
    st.ended = true;
    clearTimeout(st.idleTimer);
    log.debug({ peer: peerOf(st.socket), why }, 'ssh gateway: connection closed');
    // The channels first, each with its message: a client that gets the disconnect first (OpenSSH) exits
    // without printing what it had received, and with status 255 instead of the channel's.
    void Promise.all([...st.channels].map((ch) => ch.close(why))).then(() => {
      try {
        st.client?.end();
      } catch {
        /* already gone */
      }
      // A client that ignores the disconnect is cut off.
      setTimeout(() => st.socket.destroy(), 2000).unref();
    });
  };

  /** Every ssh2 callback runs through this: a throw is a log line and this connection's end, never the server's. */
  const guard =
    <A extends unknown[]>(st: ConnState, what: string, fn: (...a: A) => void) =>
    (...a: A): void => {
      try {
        fn(...a);
      } catch (err) {
        log.error({ err, peer: peerOf(st.socket), what }, 'ssh gateway: handler failed');
        endConn(st, 'internal error');
      }
    };

  ssh.on('connection', (client, info) => {
    const st = byPeer.get(`${info.ip} ${info.port}`);
    if (!st) {
      client.on('error', () => {});
      client.end();
      return;
    }
    st.client = client;
    client.on('error', (err) => log.debug({ err: err.message, peer: peerOf(st.socket) }, 'ssh gateway: client error'));
    client.on('authentication', guard(st, 'authentication', (ctx: AuthContext) => authenticate(st, ctx)));
    client.on('ready', guard(st, 'ready', () => {
      if (!st.grant) return endConn(st, 'ready without a grant');
      clearTimeout(st.authTimer);
      log.info({ peer: peerOf(st.socket), user: st.grant.user }, 'ssh gateway: authenticated');
      watchIdle(st);
    }));
    client.on('session', guard(st, 'session', (accept, reject) => {
      if (!st.grant || st.ended || st.channels.size >= maxChannels) return reject();
      onSession(st, st.grant, accept());
    }));
    client.on('tcpip', guard(st, 'tcpip', (accept, reject, req: TcpipRequestInfo) => onDirectTcpip(st, accept, reject, req)));
    client.on('openssh.streamlocal', (_accept, reject) => reject());
    // tcpip-forward, streamlocal-forward, keepalive@openssh.com, no-more-sessions: none granted.
    client.on('request', (_accept, reject, name) => {
      log.debug({ peer: peerOf(st.socket), name }, 'ssh gateway: global request refused');
      reject?.();
    });
  });

  const authenticate = (st: ConnState, ctx: AuthContext) => {
    if (ctx.method !== 'publickey') {
      // "none", password, keyboard-interactive, hostbased: the answer names publickey, the only method.
      if (ctx.method !== 'none') countFailure(st);
      return ctx.reject(['publickey']);
    }
    const presented = { algo: ctx.key.algo, blob: ctx.key.data };
    if (!ctx.signature) {
      // A key query is answered "go on and sign" for every key we can verify, whatever the lease: whether
      // a public key belongs to a lease is told only to someone holding its private key.
      if (!parsePublicKey(`${presented.algo} ${presented.blob.toString('base64')}`)) return ctx.reject(['publickey']);
      return ctx.accept();
    }
    const user = parseGatewayUser(ctx.username);
    const lease = user ? o.deps.lease(user.leaseId) : undefined;
    const key = findLeaseKey(lease, presented);
    const signed = !!key && !!ctx.blob && key.verify(ctx.blob, ctx.signature, ctx.hashAlgo);
    if (!user || !signed || !leaseUsable(user, lease)) {
      log.info({ peer: peerOf(st.socket), user: ctx.username.slice(0, 80) }, 'ssh gateway: authentication refused');
      countFailure(st);
      return ctx.reject(['publickey']);
    }
    st.grant = { user, key: presented, boardId: lease.boardId, boardIp: lease.boardIp, epoch: lease.epoch };
    ctx.accept();
  };

  const countFailure = (st: ConnState) => {
    if (++st.failures >= maxAuthTries) setImmediate(() => endConn(st, 'too many authentication failures'));
  };

  const onSession = (st: ConnState, grant: Grant, session: Session) => {
    const refuse = (what: string) => (_accept: unknown, reject?: () => void) => {
      log.info({ peer: peerOf(st.socket), user: grant.user, what }, 'ssh gateway: session request refused');
      reject?.();
    };
    session.on('exec', refuse('exec'));
    session.on('subsystem', refuse('subsystem'));
    session.on('sftp', refuse('sftp'));
    session.on('x11', refuse('x11'));
    session.on('auth-agent', refuse('auth-agent'));
    session.on('env', (_a, reject) => reject?.());
    session.on('signal', (_a, reject) => reject?.());
    session.on('pty', (accept) => accept?.());
    session.on('window-change', (accept) => accept?.());
    session.once('shell', guard(st, 'shell', (accept: () => ServerChannel, reject: () => void) => {
      if (grant.user.kind === 'jump') return usageHint(grant, accept());
      const lease = o.deps.lease(grant.user.leaseId);
      if (grantProblem(grant, lease) || st.channels.size >= maxChannels) return reject();
      attachConsole(st, grant, lease!, accept());
    }));
  };

  const usageHint = (grant: Grant, stream: ServerChannel) => {
    const at = o.publicAddress ?? `${o.host}:${address.port}`;
    const lease = o.deps.lease(grant.user.leaseId);
    stream.on('error', () => {});
    stream.write(
      `[dozen] no shell here: reach the board with  ssh -J ${grant.user.leaseId}@${at} root@${lease?.boardIp ?? '<board-ip>'}` +
        `  (its console: ssh -t console+${grant.user.leaseId}@${at})\r\n`,
    );
    stream.exit(1);
    stream.end();
  };

  const attachConsole = (st: ConnState, grant: Grant, lease: GatewayLease, stream: ServerChannel) => {
    const leaseId = grant.user.leaseId;
    let ended = false;
    let attachment: GatewayConsoleAttachment | undefined;
    const entry: OpenChannel = {
      kind: 'console',
      close: (reason) => {
        finish(`console closed: ${reason}`, 1);
        return closedOrAfter(stream, CLOSE_GRACE_MS);
      },
    };
    const finish = (message: string | undefined, code: number) => {
      if (ended) return;
      ended = true;
      dropChannel(st, entry);
      attachment?.detach();
      try {
        if (message) stream.write(`\r\n[dozen] ${message}\r\n`);
        stream.exit(code);
        stream.end();
      } catch {
        /* the client is gone */
      }
    };
    addChannel(st, entry);
    stream.on('error', () => finish(undefined, 1));
    stream.on('close', () => finish(undefined, 1));
    stream.write(`[dozen] console of lease ${leaseId} — ~. to leave\r\n`);
    const sink: GatewayConsoleSink = {
      data: (chunk) => {
        if (ended) return;
        if (stream.writableLength > maxBuffered) return finish('console closed: this connection fell behind the console output', 1);
        stream.write(chunk);
      },
      notice: (text) => {
        if (!ended) stream.stderr.write(`[dozen] ${text}\r\n`);
      },
      end: (reason) => finish(`console closed: ${reason}`, 1),
    };
    try {
      attachment = o.deps.attachConsole(lease, `${lease.tenantId} (ssh)`, sink);
    } catch (err) {
      return finish(`console refused: ${(err as Error).message}`, 1);
    }
    if (!attachment) return finish('this lease has no console line', 1);
    if (attachment.scrollback.length) stream.write(attachment.scrollback);
    let esc = ESCAPE_START;
    stream.on('data', (chunk: Buffer) => {
      if (ended) return;
      const r = scanEscape(esc, chunk);
      esc = r.state;
      if (r.forward.length && attachment) {
        attachment.write(r.forward).catch((err: unknown) => sink.notice?.(`input not sent: ${(err as Error).message}`));
      }
      if (r.leave) finish('left the console', 0);
    });
    log.info({ peer: peerOf(st.socket), lease: leaseId, board: lease.boardId }, 'ssh gateway: console attached');
  };

  const onDirectTcpip = (st: ConnState, accept: () => ServerChannel, reject: () => void, req: TcpipRequestInfo) => {
    const grant = st.grant;
    if (!grant || st.ended) return reject();
    const lease = o.deps.lease(grant.user.leaseId);
    const d = checkDirectTcpip(grant, lease, { host: req.destIP, port: req.destPort }, boardPort);
    if (!d.ok || st.channels.size >= maxChannels) {
      log.info({ peer: peerOf(st.socket), user: grant.user, dest: `${req.destIP.slice(0, 80)}:${req.destPort}`, reason: d.ok ? 'too many channels' : d.reason }, 'ssh gateway: forward refused');
      return reject();
    }
    const board = connect({ host: d.host, port: d.port });
    let channel: ServerChannel | undefined;
    let done = false;
    const entry: OpenChannel = {
      kind: 'tunnel',
      close: async (reason) => {
        if (done) return;
        done = true;
        dropChannel(st, entry);
        clearTimeout(timer);
        board.destroy();
        if (channel) {
          log.info({ peer: peerOf(st.socket), lease: grant.user.leaseId, reason }, 'ssh gateway: tunnel closed');
          try {
            channel.close();
          } catch {
            /* gone */
          }
          await closedOrAfter(channel, CLOSE_GRACE_MS);
        } else {
          try {
            reject();
          } catch {
            /* gone */
          }
        }
      },
    };
    addChannel(st, entry);
    const timer = setTimeout(() => void entry.close('board did not answer'), connectTimeoutMs);
    board.on('error', (err) => void entry.close(`board: ${err.message}`));
    board.on('close', () => void entry.close('board closed'));
    board.once('connect', () => {
      clearTimeout(timer);
      if (done || st.ended) return void entry.close('client gone');
      board.setNoDelay(true);
      channel = accept();
      channel.on('error', () => void entry.close('channel error'));
      channel.on('close', () => void entry.close('channel closed'));
      board.pipe(channel).pipe(board);
      log.info({ peer: peerOf(st.socket), lease: grant.user.leaseId, board: lease?.boardId }, 'ssh gateway: tunnel open');
    });
  };

  const recheck = () => {
    for (const st of conns) {
      if (!st.grant || st.ended) continue;
      let problem: string | null;
      try {
        problem = grantProblem(st.grant, o.deps.lease(st.grant.user.leaseId));
      } catch (err) {
        log.error({ err }, 'ssh gateway: lease check failed');
        continue;
      }
      if (problem) {
        log.info({ peer: peerOf(st.socket), user: st.grant.user, problem }, 'ssh gateway: grant ended');
        endConn(st, problem);
      }
    }
  };
  const rechecker = setInterval(recheck, o.recheckMs ?? 1000);
  rechecker.unref();

  const tcp = createServer((socket) => {
    socket.on('error', () => {});
    let fromThere = 0;
    for (const c of conns) if (c.socket.remoteAddress === socket.remoteAddress) fromThere++;
    if (conns.size >= maxConnections || fromThere >= maxPerAddress) {
      refusedConnections++;
      socket.destroy();
      return;
    }
    const peer = `${socket.remoteAddress} ${socket.remotePort}`;
    const st: ConnState = {
      socket,
      failures: 0,
      channels: new Set(),
      ended: false,
      authTimer: setTimeout(() => {
        log.debug({ peer }, 'ssh gateway: authentication timeout');
        endConn(st, 'authentication timeout');
        socket.destroy();
      }, authTimeoutMs),
    };
    conns.add(st);
    byPeer.set(peer, st);
    socket.once('close', () => {
      clearTimeout(st.authTimer);
      clearTimeout(st.idleTimer);
      conns.delete(st);
      if (byPeer.get(peer) === st) byPeer.delete(peer);
      st.ended = true;
      for (const ch of [...st.channels]) void ch.close('connection closed');
    });
    try {
      ssh.injectSocket(socket);
    } catch (err) {
      log.error({ err }, 'ssh gateway: connection setup failed');
      socket.destroy();
    }
  });
  tcp.on('error', (err) => log.error({ err }, 'ssh gateway: listener error'));
  await new Promise<void>((resolve, reject) => {
    tcp.once('error', reject);
    tcp.listen(o.port, o.host, () => {
      tcp.off('error', reject);
      resolve();
    });
  });
  const address = tcp.address() as { port: number };
  log.info({ host: o.host, port: address.port }, 'ssh gateway listening');

  return {
    host: o.host,
    port: address.port,
    hostPublicKey: hostKey.publicKey,
    stats: () => ({
      connections: conns.size,
      authenticated: [...conns].filter((c) => c.grant).length,
      channels: [...conns].reduce((n, c) => n + c.channels.size, 0),
      refusedConnections,
    }),
    recheck,
    async close() {
      clearInterval(rechecker);
      const closed = new Promise<void>((r) => tcp.close(() => r()));
      for (const st of conns) endConn(st, 'gateway stopping');
      const cut = setTimeout(() => {
        for (const st of conns) st.socket.destroy();
      }, 1000);
      await closed;
      clearTimeout(cut);
    },
  };
}

/** How long a channel being closed by us is given to be closed by the client too. */
const CLOSE_GRACE_MS = 2000;

function closedOrAfter(stream: ServerChannel, ms: number): Promise<void> {
  if (stream.destroyed || stream.closed) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    t.unref();
    stream.once('close', () => {
      clearTimeout(t);
      resolve();
    });
  });
}

function peerOf(s: Socket): string {
  return `${s.remoteAddress}:${s.remotePort}`;
}

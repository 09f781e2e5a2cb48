import { log as rootLog, type Logger } from '../log.js';
import { assertIfName, checkNetworkId, PortBook, type BoardPort, type NetworkDriver, type NetworkState } from './driver.js';
import { ControllerFilter } from './controller-filter.js';
import { run } from './exec.js';
import {
  BRIDGE_TABLE,
  renderAttach,
  renderBridgeRuleset,
  renderDetach,
  renderJoin,
  renderLeave,
  SETS,
  type Services,
} from './nft-ruleset.js';

export interface LinuxBridgeConfig {
  /** The bridge the boards' ports are enslaved to. */
  bridge: string;
  /** The namespace the bridge lives in (the lab's); default: ours. */
  netns?: string;
  /** The bridge port towards the controller (trusted, never isolated). */
  uplink: string;
  controllerIp: string;
  /**
   * The controller's own interface on the boot network, where its input filter goes (the lab: the host
   * end of the lab veth; a controller bridging its boards itself: the bridge). Omitted: no input filter,
   * reported as a problem.
   */
  controllerIface?: string;
  /** The namespace of the controller's interface; default: ours. */
  controllerNetns?: string;
  services: Services;
  /** Let boards send IPv6 (not fenced by address; RAs and DHCPv6 replies still dropped). Default false. */
  ipv6?: boolean;
}

interface PortLinkInfo {
  ifname: string;
  master?: string;
  linkinfo?: { info_slave_data?: { isolated?: boolean; learning?: boolean; locked?: boolean } };
}

/**
 * Fences board ports on a Linux bridge: per port, bridge flags (`isolated` until the board joins a private
 * network, `learning off`, `locked on` with a static FDB entry for the board's MAC) and one nftables
 * `bridge` table with a fixed rule set fed from sets (see nft-ruleset.ts). Attaching a board is one
 * `bridge -batch` and one nft transaction of three elements, whatever the number of boards.
 */
export class LinuxBridgeNetwork implements NetworkDriver {
  readonly name = 'linux-bridge';
  private readonly book = new PortBook();
  /** networkId → the number nft carries (a mark); numbers are never reused while a process lives. */
  private readonly netNumbers = new Map<string, number>();
  private nextNet = 1;
  private queue: Promise<unknown> = Promise.resolve();
  private started = false;
  private readonly ctl?: ControllerFilter;

  constructor(
    private readonly c: LinuxBridgeConfig,
    private readonly log: Logger = rootLog,
  ) {
    assertIfName(c.bridge, 'bridge');
    assertIfName(c.uplink, 'uplink');
    if (c.controllerIface) assertIfName(c.controllerIface, 'controller interface');
    if (c.controllerIface) this.ctl = new ControllerFilter(c.controllerIface, c.services, c.controllerNetns);
  }

  start = () => this.serial(() => this.doStart());
  stop = () => this.serial(() => this.doStop());
  attach = (p: BoardPort) => this.serial(() => this.doAttach(p));
  detach = (boardId: string) => this.serial(() => this.doDetach(boardId));
  join = (boardId: string, networkId: string) => this.serial(() => this.doJoin(boardId, checkNetworkId(networkId)));
  leave = (boardId: string) => this.serial(() => this.doLeave(boardId));

  ports(): NetworkState['ports'] {
    return this.book.snapshot().ports;
  }

  async state(): Promise<NetworkState> {
    const snap = this.book.snapshot();
    return { driver: this.name, boardIsolation: 'enforced', ...snap, problems: await this.problems() };
  }

  /** One operation at a time: a join racing a detach must not leave elements of a port nobody holds. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => {});
    return next;
  }

  /** Into the bridge's namespace (the controller's filter: controller-filter.ts, in its own). */
  private nft(input: string): Promise<string> {
    return run('nft', ['-f', '-'], { input, netns: this.c.netns });
  }

  private bridgeBatch(lines: string[]): Promise<string> {
    return run('bridge', ['-batch', '-'], { input: lines.join('\n') + '\n', netns: this.c.netns });
  }

  private async doStart(): Promise<void> {
    const links = await this.bridgePorts().catch((err: Error) => {
      throw new Error(`network linux-bridge: cannot read bridge ${this.c.bridge}${this.c.netns ? ` in netns ${this.c.netns}` : ''}: ${err.message}`, { cause: err });
    });
    if (!links.some((l) => l.ifname === this.c.uplink)) throw new Error(`network linux-bridge: uplink ${this.c.uplink} is not a port of bridge ${this.c.bridge}`);
    // Declare-then-delete-then-define in one transaction: a restart replaces the table atomically, and
    // there is no instant without it (the ports would be open).
    const rules = renderBridgeRuleset({ uplink: this.c.uplink, controllerIp: this.c.controllerIp, ipv6: this.c.ipv6 ?? false });
    await this.nft(`table bridge ${BRIDGE_TABLE}\ndelete table bridge ${BRIDGE_TABLE}\n${rules}`);
    if (this.ctl) {
      await this.ctl.install();
    } else {
      this.log.warn('network linux-bridge: no controllerIface configured: boards can reach every port of the controller');
    }
    this.started = true;
    // A second start (after stop) puts back what the book holds.
    for (const p of this.book.ports.values()) await this.applyAttach(p);
    for (const [boardId, net] of this.book.networkOf) await this.applyJoin(this.book.attached(boardId), this.netNumber(net));
  }

  private async doStop(): Promise<void> {
    this.started = false;
    await this.nft(`table bridge ${BRIDGE_TABLE}\ndelete table bridge ${BRIDGE_TABLE}\n`).catch(() => {});
    await this.ctl?.remove();
  }

  private async doAttach(raw: BoardPort): Promise<void> {
    const p = this.book.admit(raw);
    assertIfName(p.port, `bridge port of board ${p.boardId}`);
    const old = this.book.ports.get(p.boardId);
    const net = this.book.networkOf.get(p.boardId);
    if (old && (old.port !== p.port || old.mac !== p.mac || old.ip !== p.ip)) await this.doDetach(p.boardId);
    if (this.started) await this.applyAttach(p, Boolean(old && old.port === p.port && old.mac === p.mac && old.ip === p.ip));
    this.book.ports.set(p.boardId, p);
    if (net) await this.doJoin(p.boardId, net);
  }

  private async applyAttach(p: BoardPort, already = false): Promise<void> {
    // Kernel-side first, while the port is still closed by nft (not yet in @boards): isolated (no
    // board-to-board in the bridge's own forwarding), no learning (a spoofed source MAC cannot move
    // another board's FDB entry), locked (only MACs with an FDB entry on this port get through). What the
    // port learned before it was fenced (the tap came up earlier) goes: a MAC learned there would steer
    // someone else's unicast to this port.
    // An unchanged board attached again (every inventory sync does it) keeps its private network open:
    // doJoin sees it is already in that network and does nothing, so `isolated` must stay off here.
    const isolated = already && this.book.networkOf.has(p.boardId) ? 'off' : 'on';
    const batch = [`link set dev ${p.port} isolated ${isolated} learning off locked on`, `fdb flush dev ${p.port} master dynamic`, `fdb replace ${p.mac} dev ${p.port} master static`];
    await this.bridgeBatch(batch).catch((err: Error) => {
      throw new Error(`network linux-bridge: cannot fence port ${p.port} of board ${p.boardId}: ${err.message}`, { cause: err });
    });
    if (!already) await this.nft(renderAttach(p));
    this.log.info({ board: p.boardId, port: p.port, mac: p.mac, ip: p.ip }, 'network: board port attached');
  }

  private async doDetach(boardId: string): Promise<void> {
    const p = this.book.ports.get(boardId);
    if (!p) return;
    const net = this.book.networkOf.get(boardId);
    if (this.started) {
      // nft first: the port is closed again before its FDB entry goes.
      await this.nft(renderDetach(p, net ? this.netNumber(net) : undefined));
      await this.bridgeBatch([`link set dev ${p.port} isolated on`, `fdb del ${p.mac} dev ${p.port} master`]).catch((err: Error) => {
        this.log.warn({ board: boardId, port: p.port, err: err.message }, 'network: port gone or FDB entry already removed');
      });
    }
    this.book.ports.delete(boardId);
    this.book.networkOf.delete(boardId);
    this.log.info({ board: boardId, port: p.port }, 'network: board port detached');
  }

  private async doJoin(boardId: string, networkId: string): Promise<void> {
    const p = this.book.attached(boardId);
    const current = this.book.networkOf.get(boardId);
    if (current === networkId) return;
    if (current) await this.doLeave(boardId);
    const net = this.netNumber(networkId);
    if (this.started) await this.applyJoin(p, net);
    this.book.networkOf.set(boardId, networkId);
    this.log.info({ board: boardId, network: networkId }, 'network: board joined private network');
  }

  private async applyJoin(p: BoardPort, net: number): Promise<void> {
    // Elements first, then clear `isolated`: the nft forward chain already allows only same-network pairs.
    await this.nft(renderJoin(p.port, net));
    await this.bridgeBatch([`link set dev ${p.port} isolated off`]);
  }

  private async doLeave(boardId: string): Promise<void> {
    const p = this.book.attached(boardId);
    const networkId = this.book.networkOf.get(boardId);
    if (!networkId) return;
    if (this.started) {
      // Isolate first, then remove the elements: never a moment where the port is open to more than its network.
      await this.bridgeBatch([`link set dev ${p.port} isolated on`]);
      await this.nft(renderLeave(p.port, this.netNumber(networkId)));
    }
    this.book.networkOf.delete(boardId);
    if (![...this.book.networkOf.values()].includes(networkId)) this.netNumbers.delete(networkId);
    this.log.info({ board: boardId, network: networkId }, 'network: board left private network');
  }

  private netNumber(networkId: string): number {
    let n = this.netNumbers.get(networkId);
    if (!n) {
      n = this.nextNet++;
      this.netNumbers.set(networkId, n);
    }
    return n;
  }

  private async bridgePorts(): Promise<PortLinkInfo[]> {
    const out = await run('ip', ['-d', '-j', 'link', 'show', 'master', this.c.bridge], { netns: this.c.netns });
    return JSON.parse(out || '[]') as PortLinkInfo[];
  }

  /** What the datapath actually holds, compared with what we put there. */
  private async problems(): Promise<string[]> {
    const problems: string[] = [];
    if (!this.started) return ['network driver not started: board ports are not fenced'];
    if (!this.c.controllerIface) problems.push('no controller input filter (controllerIface not set): boards reach every controller port');
    try {
      const boards = await this.setElements(SETS.boards);
      const want = new Set([...this.book.ports.values()].map((p) => p.port));
      for (const port of want) if (!boards.has(port)) problems.push(`port ${port} is missing from nft set ${SETS.boards}`);
      for (const port of boards) if (!want.has(port)) problems.push(`nft set ${SETS.boards} holds port ${port} that no board is attached to`);
    } catch (err) {
      problems.push(`nft table bridge ${BRIDGE_TABLE} unreadable: ${(err as Error).message}`);
    }
    if (this.ctl) problems.push(...(await this.ctl.problems()));
    try {
      const links = new Map((await this.bridgePorts()).map((l) => [l.ifname, l.linkinfo?.info_slave_data ?? {}]));
      for (const p of this.book.ports.values()) {
        const f = links.get(p.port);
        if (!f) {
          problems.push(`port ${p.port} of board ${p.boardId} is not on bridge ${this.c.bridge}`);
          continue;
        }
        const joined = this.book.networkOf.has(p.boardId);
        if (f.isolated !== !joined) problems.push(`port ${p.port} of board ${p.boardId} has isolated ${f.isolated ? 'on' : 'off'}`);
        if (f.learning !== false) problems.push(`port ${p.port} of board ${p.boardId} learns MACs`);
        if (f.locked !== true) problems.push(`port ${p.port} of board ${p.boardId} is not locked`);
      }
    } catch (err) {
      problems.push(`bridge ${this.c.bridge} unreadable: ${(err as Error).message}`);
    }
    return problems;
  }

  private async setElements(set: string): Promise<Set<string>> {
    const out = await run('nft', ['-j', 'list', 'set', 'bridge', BRIDGE_TABLE, set], { netns: this.c.netns });
    const doc = JSON.parse(out) as { nftables: Array<{ set?: { elem?: unknown[] } }> };
    const elems = doc.nftables.find((x) => x.set)?.set?.elem ?? [];
    return new Set(elems.map(String));
  }
}

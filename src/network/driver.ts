import { isIP } from 'node:net';
import { normalizeMac } from '../util/net.js';

/**
 * One board's port on the boot network, as data (Neutron's port security, OVN's `port_security`): the
 * only MAC and IPv4 address the board may send from, on the port it is plugged into.
 */
export interface BoardPort {
  boardId: string;
  /** The interface of the board's port on the bridge (a tap in the lab), or a switch port name. */
  port: string;
  mac: string;
  ip: string;
}

/**
 * How boards are kept apart: `enforced` by the datapath this driver programs, `operator` by commands
 * an operator wrote (we trust they do it), `none` not at all (tenants can spoof and reach each other).
 */
export type BoardIsolation = 'enforced' | 'operator' | 'none';

export interface NetworkState {
  driver: string;
  boardIsolation: BoardIsolation;
  ports: Array<BoardPort & { networkId?: string }>;
  /** Tenants' private networks: boards in one may reach each other, and no other board. */
  networks: Array<{ id: string; boards: string[] }>;
  /** What is not as it should be (a missing table, a port that lost its flags); empty when healthy. */
  problems: string[];
}

/**
 * Fences boards' ports on the boot network. A port is closed until attached; an attached port may send
 * only from its board's MAC and reserved IP, may not answer DHCP, and reaches the controller's boot
 * services and, after join, the other boards of its private network — nothing else.
 */
export interface NetworkDriver {
  readonly name: string;
  /** Install the fixed datapath (idempotent: a restart replaces what a previous run left). */
  start(): Promise<void>;
  /** Remove what start() installed. Boards' ports are closed again afterwards only where the datapath defaults to closed. */
  stop(): Promise<void>;
  /** Fence a board's port to its MAC and IP (again: attaching an attached board replaces its record). */
  attach(port: BoardPort): Promise<void>;
  /** Forget a board's port; an unknown board is not an error. */
  detach(boardId: string): Promise<void>;
  /** Put an attached board into a tenant's private network (leaving any other first). */
  join(boardId: string, networkId: string): Promise<void>;
  /** Take a board out of its private network; a board in none is not an error. */
  leave(boardId: string): Promise<void>;
  state(): Promise<NetworkState>;
  /** The attached ports as this driver recorded them (cheap: no look at the datapath). */
  ports(): NetworkState['ports'];
}

const IFNAME_RE = /^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,14}$/;
/** Switch ports too ("Gi1/0/1", "swp3", "1:5"); drivers that need an interface name check for one. */
const PORT_RE = /^[A-Za-z0-9_.:/-]{1,64}$/;
const NETWORK_ID_RE = /^[A-Za-z0-9_.:-]{1,64}$/;

/** Checks and canonicalizes a port record: every field ends up in commands or nft elements. */
export function checkPort(p: BoardPort): BoardPort {
  if (typeof p.boardId !== 'string' || !p.boardId || p.boardId.length > 64 || /[\x00-\x1f\x7f]/.test(p.boardId)) {
    throw new Error(`invalid board id: ${JSON.stringify(p.boardId)}`);
  }
  if (!PORT_RE.test(p.port)) throw new Error(`invalid port name for board ${p.boardId}: ${JSON.stringify(p.port)}`);
  if (isIP(p.ip) !== 4) throw new Error(`invalid IPv4 address for board ${p.boardId}: ${JSON.stringify(p.ip)}`);
  const mac = normalizeMac(p.mac);
  if (parseInt(mac.slice(0, 2), 16) & 1) throw new Error(`multicast MAC for board ${p.boardId}: ${mac}`);
  return { boardId: p.boardId, port: p.port, mac, ip: p.ip };
}

export function checkNetworkId(id: string): string {
  if (typeof id !== 'string' || !NETWORK_ID_RE.test(id)) throw new Error(`invalid network id: ${JSON.stringify(id)} (1-64 of A-Z a-z 0-9 _ . : -)`);
  return id;
}

export function assertIfName(name: string, what = 'interface'): string {
  if (!IFNAME_RE.test(name)) throw new Error(`invalid ${what} name: ${JSON.stringify(name)}`);
  return name;
}

/**
 * The bookkeeping every driver shares: which board holds which port and network, with the conflicts
 * refused up front (two boards on one port, MAC or IP would let one speak as the other).
 */
export class PortBook {
  readonly ports = new Map<string, BoardPort>();
  readonly networkOf = new Map<string, string>();

  /** The checked record, or an error naming the board that already holds its port, MAC or IP. */
  admit(p: BoardPort): BoardPort {
    const port = checkPort(p);
    for (const other of this.ports.values()) {
      if (other.boardId === port.boardId) continue;
      if (other.port === port.port) throw new Error(`port ${port.port} is already attached to board ${other.boardId}`);
      if (other.mac === port.mac) throw new Error(`MAC ${port.mac} is already attached to board ${other.boardId}`);
      if (other.ip === port.ip) throw new Error(`IP ${port.ip} is already attached to board ${other.boardId}`);
    }
    return port;
  }

  attached(boardId: string): BoardPort {
    const p = this.ports.get(boardId);
    if (!p) throw new Error(`board ${boardId} is not attached to the network`);
    return p;
  }

  snapshot(): Pick<NetworkState, 'ports' | 'networks'> {
    const ports = [...this.ports.values()].map((p) => {
      const networkId = this.networkOf.get(p.boardId);
      return networkId ? { ...p, networkId } : { ...p };
    });
    const byNet = new Map<string, string[]>();
    for (const [board, net] of this.networkOf) byNet.set(net, [...(byNet.get(net) ?? []), board]);
    const networks = [...byNet].map(([id, boards]) => ({ id, boards: boards.sort() })).sort((a, b) => a.id.localeCompare(b.id));
    return { ports, networks };
  }
}

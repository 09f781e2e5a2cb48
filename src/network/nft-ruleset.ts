/**
 * The nftables rule sets of the `linux-bridge` network driver, rendered from its config.
 *
 * Why this shape: the rules are fixed and every per-board fact lives in sets and maps keyed by the
 * board's bridge port (Neutron/OVN port security as data). Attaching a board adds a few set elements in
 * one transaction; the rule count, and so the per-packet work (hash lookups), does not grow with boards.
 *
 * Two tables:
 *  - `bridge dozencloud` in the bridge's namespace fences the board ports at layer 2/3: source MAC, source
 *    IPv4, ARP, no DHCP server replies, no RAs, no board-to-board outside a private network, and to the
 *    uplink only what is addressed to the controller (or DHCP broadcasts).
 *  - `inet dozencloud_ctl_<iface>` in the controller's namespace, on its boot-network interface, accepts only
 *    the boot services. It is separate because the bridge family has no connection tracking on this
 *    kernel (no nf_conntrack_bridge), and TFTP answers from an ephemeral port: only conntrack on the
 *    controller can tell the board's ACKs to that port from a probe of any other port.
 */

export const BRIDGE_TABLE = 'dozencloud';
/**
 * The controller's input filter, one table per boot interface: two servers on one host (two labs, a
 * test beside a dev server) each keep their own, and a restart replaces only its own.
 */
export const controllerTable = (iface: string) => `dozencloud_ctl_${iface.replace(/[^A-Za-z0-9_]/g, '_')}`;

export interface Services {
  dhcp: number;
  tftp: number;
  iscsi: number;
  metadata: number;
  api?: number;
}

export interface BridgeRulesetOptions {
  uplink: string;
  controllerIp: string;
  /** Let boards send IPv6 (still no RAs, redirects or DHCPv6 server replies). Off: IPv6 is not fenced by address. */
  ipv6: boolean;
}

/** Sets and maps, by name: what attach/join fill. */
export const SETS = {
  /** Every attached board port. A bridge port not in it (and not the uplink) passes nothing. */
  boards: 'boards',
  /** port . MAC: the one source MAC of each port (also: the one destination MAC unicast may go out to). */
  boardMac: 'board_mac',
  /** port . IPv4: the one source address of each port. */
  boardIpv4: 'board_ipv4',
  /** port → private network number (a mark: a plain 32-bit value nft can carry between two lookups). */
  boardNet: 'board_net',
  /** port . private network number: the output side of the same fact. */
  netMember: 'net_member',
} as const;

const q = (s: string) => JSON.stringify(s); // names are checked (IFNAMSIZ, [A-Za-z0-9_.-]) before they get here

/** The whole bridge table; applied with `nft -f -` after a `destroy`-equivalent, so start() is idempotent. */
export function renderBridgeRuleset(o: BridgeRulesetOptions): string {
  const v6 = o.ipv6 ? 'accept' : 'drop';
  return `table bridge ${BRIDGE_TABLE} {
  set ${SETS.boards} { type ifname; }
  set ${SETS.boardMac} { type ifname . ether_addr; }
  set ${SETS.boardIpv4} { type ifname . ipv4_addr; }
  map ${SETS.boardNet} { type ifname : mark; }
  set ${SETS.netMember} { type ifname . mark; }

  # Everything a board sends is checked here, before the bridge learns or forwards anything.
  chain prerouting {
    type filter hook prerouting priority -300; policy accept;
    iifname ${q(o.uplink)} accept
    iifname @${SETS.boards} jump from_board
    # A port nobody attached (a new tap, a board not yet enrolled) is closed, not open: not even its DHCP
    # requests pass, because its frames would teach the bridge (learning is still on there) another
    # board's or the controller's MAC. Enroll a board by the MAC on its label or its U-Boot banner.
    drop
  }

  chain from_board {
    # Only the enrolled MAC of this very port: a MAC proves nothing unless it is bound to where it comes from.
    iifname . ether saddr != @${SETS.boardMac} drop
    ether type arp jump board_arp
    ether type ip jump board_ipv4
    ether type ip6 jump board_ipv6
    # Any other ethertype (VLAN tags, LLDP, STP, raw 802.3): boards have no business sending it.
    drop
  }

  chain board_arp {
    # Only well-formed Ethernet/IPv4 requests and replies.
    arp htype != 1 drop
    arp ptype != ip drop
    arp hlen != 6 drop
    arp plen != 4 drop
    arp operation != { request, reply } drop
    # The sender MAC inside the ARP packet is what neighbours store: it must be the port's too.
    iifname . arp saddr ether != @${SETS.boardMac} drop
    # Gratuitous or not, a board may claim only its own reserved address...
    iifname . arp saddr ip @${SETS.boardIpv4} accept
    # ...or none (RFC 5227 address probe).
    arp operation request arp saddr ip 0.0.0.0 accept
    drop
  }

  chain board_ipv4 {
    # A board answering DHCP would steer other boards' (or its own tenant's) network boot.
    udp sport 67 drop
    iifname . ip saddr @${SETS.boardIpv4} accept
    # DHCP discover/request before the board has its address.
    ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 accept
    drop
  }

  chain board_ipv6 {
    # Router advertisements and redirects would reroute every board; DHCPv6 replies come from servers only.
    icmpv6 type { nd-router-advert, nd-redirect } drop
    udp sport 547 drop
    ${v6}
  }

  chain forward {
    type filter hook forward priority 0; policy accept;
    iifname @${SETS.boards} oifname @${SETS.boards} jump board_to_board
    iifname @${SETS.boards} oifname ${q(o.uplink)} jump board_to_controller
    iifname @${SETS.boards} drop
    oifname @${SETS.boards} jump to_board
    # A port nobody attached gets nothing either, not even the controller's broadcasts.
    oifname != ${q(o.uplink)} drop
  }

  # Ports are also bridge-isolated until they join a network; this is the rule that holds when they are not.
  chain board_to_board {
    meta mark set 0
    meta mark set iifname map @${SETS.boardNet}
    meta mark 0 drop
    oifname . meta mark @${SETS.netMember} meta mark set 0 jump to_board
    meta mark set 0
    drop
  }

  # Learning is off on board ports, so a unicast frame to a MAC the bridge does not know floods to every
  # port: a board must see only unicast addressed to its own MAC (no eavesdropping in promiscuous mode).
  chain to_board {
    meta pkttype { broadcast, multicast } accept
    oifname . ether daddr @${SETS.boardMac} accept
    drop
  }

  # To the uplink (or to the bridge itself): only the controller, and DHCP broadcasts. Which of the
  # controller's ports is decided on the controller (table dozencloud_ctl_<iface>, with conntrack).
  chain board_to_controller {
    ether type arp accept
    ip daddr ${o.controllerIp} accept
    ip daddr 255.255.255.255 udp dport 67 accept
    ether type ip6 ${v6}
    drop
  }

  # A controller that bridges its boards itself has its address on the bridge: frames to it come here.
  chain input {
    type filter hook input priority 0; policy accept;
    iifname @${SETS.boards} jump board_to_controller
  }
}
`;
}

export interface ControllerRulesetOptions {
  /** The controller's interface on the boot network (the lab's host-side veth, or the bridge itself). */
  iface: string;
  services: Services;
}

/** The controller's input filter: from the boot network, only the boot services (and replies to what we started). */
export function renderControllerRuleset(o: ControllerRulesetOptions): string {
  const s = o.services;
  const tcp = [s.iscsi, s.metadata, ...(s.api ? [s.api] : [])];
  return `table inet ${controllerTable(o.iface)} {
  chain input {
    type filter hook input priority 0; policy accept;
    iifname != ${q(o.iface)} accept
    # TFTP data and ACKs go to the server's per-transfer port: conntrack knows it, a port list cannot.
    ct state established,related accept
    ct state invalid drop
    udp dport { ${s.dhcp}, ${s.tftp} } accept
    tcp dport { ${tcp.join(', ')} } accept
    # Everything else a board sends to the controller: the API, ssh, any debug listener stays out of reach.
    drop
  }
}
`;
}

/** One attach, as one nft transaction: a few elements, never a rule. */
export function renderAttach(p: { port: string; mac: string; ip: string }): string {
  const t = `bridge ${BRIDGE_TABLE}`;
  return [
    `add element ${t} ${SETS.boardMac} { ${q(p.port)} . ${p.mac} }`,
    `add element ${t} ${SETS.boardIpv4} { ${q(p.port)} . ${p.ip} }`,
    // Last: until the port is in `boards` it is closed, so a half-applied attach never opens it.
    `add element ${t} ${SETS.boards} { ${q(p.port)} }`,
    '',
  ].join('\n');
}

export function renderDetach(p: { port: string; mac: string; ip: string }, net?: number): string {
  const t = `bridge ${BRIDGE_TABLE}`;
  return [
    `delete element ${t} ${SETS.boards} { ${q(p.port)} }`,
    ...(net ? renderLeave(p.port, net).trim().split('\n') : []),
    `delete element ${t} ${SETS.boardMac} { ${q(p.port)} . ${p.mac} }`,
    `delete element ${t} ${SETS.boardIpv4} { ${q(p.port)} . ${p.ip} }`,
    '',
  ].join('\n');
}

export function renderJoin(port: string, net: number): string {
  const t = `bridge ${BRIDGE_TABLE}`;
  return `add element ${t} ${SETS.boardNet} { ${q(port)} : ${net} }\nadd element ${t} ${SETS.netMember} { ${q(port)} . ${net} }\n`;
}

export function renderLeave(port: string, net: number): string {
  const t = `bridge ${BRIDGE_TABLE}`;
  return `delete element ${t} ${SETS.netMember} { ${q(port)} . ${net} }\ndelete element ${t} ${SETS.boardNet} { ${q(port)} }\n`;
}

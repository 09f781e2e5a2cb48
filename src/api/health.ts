import type { ConsoleWebSocket } from '../console/index.js';
import type { NetworkHealth } from '../network/board-network.js';

/**
 * GET /v1/health's numbers. Public: how boards are isolated and whether anything is wrong with it (the
 * details: GET /v1/network, admins), and the protocol servers' counters.
 */
export function healthStats(o: { network: { health(): NetworkHealth }; tftp: { stats: object }; dhcp: { stats: object }; console: () => ConsoleWebSocket | undefined }): () => Record<string, unknown> {
  return () => {
    const h = o.network.health();
    return { boardIsolation: h.boardIsolation, network: { driver: h.driver, problems: h.problems.length }, tftp: o.tftp.stats, dhcp: o.dhcp.stats, console: o.console()?.stats() };
  };
}

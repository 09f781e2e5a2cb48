import { statfs } from 'node:fs/promises';
import type { Route } from './route.js';
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

/** What GET /v1/health/detail reads: each part the server runs, absent when it does not run it. */
export interface HealthParts {
  storage?: { dir: string; driver: string; tgtdPid: () => number | null };
  docker?: () => Array<{ id: string; health: string; markedDown: boolean; reason?: string; checkedAt?: string }> | undefined;
  lab?: () => { netns: string; boards: number };
  network: () => NetworkHealth;
}

/**
 * GET /v1/health/detail, for operators: tgtd, storage space, Docker engines, board isolation and the lab —
 * what an operator checks first when leases fail. Admin only: it names host paths and engines.
 */
export function healthDetailRoutes(parts: HealthParts): Route[] {
  return [
    {
      method: 'get',
      path: '/health/detail',
      summary: 'tgtd, storage space, Docker engines, board isolation, the lab (operators)',
      access: 'admin',
      handler: async () => {
        const problems: string[] = [];
        let storage: Record<string, unknown> | undefined;
        if (parts.storage) {
          const pid = parts.storage.tgtdPid();
          if (pid === null) problems.push('tgtd is not running');
          const fs = await statfs(parts.storage.dir).catch((err: Error) => (problems.push(`storage ${parts.storage!.dir}: ${err.message}`), undefined));
          const freeBytes = fs ? fs.bavail * fs.bsize : undefined;
          const totalBytes = fs ? fs.blocks * fs.bsize : undefined;
          if (freeBytes !== undefined && totalBytes && freeBytes / totalBytes < 0.1) problems.push(`storage ${parts.storage.dir}: less than 10% free`);
          storage = { dir: parts.storage.dir, driver: parts.storage.driver, tgtd: { running: pid !== null, pid }, freeBytes, totalBytes };
        }
        const docker = parts.docker?.();
        for (const e of docker ?? []) if (e.health !== 'up' || e.markedDown) problems.push(`Docker engine ${e.id}: ${e.markedDown ? 'marked down' : e.health}${e.reason ? ` (${e.reason})` : ''}`);
        const net = parts.network();
        problems.push(...net.problems.map((p) => `network: ${p}`));
        return { ok: problems.length === 0, problems, storage: storage ?? null, docker: docker ?? null, network: { driver: net.driver, boardIsolation: net.boardIsolation }, lab: parts.lab?.() ?? null };
      },
    },
  ];
}

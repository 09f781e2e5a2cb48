import type { Route } from '../api/route.js';

/**
 * GET /v1/ssh-gateway: the port the SSH gateway listens on and its host key (null when it is off), so the
 * web UI and the CLI show a command that works and a tenant can check the key on first use instead of
 * trusting it blindly. Public: anyone who reaches the port sees both anyway.
 */
export function sshGatewayRoute(gateway: () => { port: number; hostPublicKey: string } | undefined): Route {
  return {
    method: 'get',
    path: '/ssh-gateway',
    summary: 'Where the SSH gateway listens and its host key (null when off)',
    access: 'public',
    handler: () => {
      const g = gateway();
      return { port: g?.port ?? null, hostKey: g?.hostPublicKey ?? null };
    },
  };
}

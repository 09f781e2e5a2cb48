import type { Route } from '../api/route.js';

/**
 * GET /v1/ssh-gateway: the port the SSH gateway listens on (null when it is off), so the web UI and the CLI
 * show a command that works. Public: anyone who can reach the controller can see the port anyway.
 */
export function sshGatewayRoute(port: () => number | null): Route {
  return { method: 'get', path: '/ssh-gateway', summary: 'Where the SSH gateway listens (its port; null when off)', access: 'public', handler: () => ({ port: port() }) };
}

import { spawn } from 'node:child_process';
import type { Command } from 'commander';
import type { Lease } from '../store/schema.js';
import { ApiError, client, type ApiClient, type Common } from './context.js';

export const DEFAULT_GATEWAY_PORT = 2222;

export interface Gateway {
  host: string;
  port: number;
}

/** `host:port`, `host`, `[v6]:port` or `[v6]`; the port defaults to DEFAULT_GATEWAY_PORT. */
export function parseGateway(s: string): Gateway {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+))(?::(\d+))?$/.exec(s.trim());
  const port = m?.[3] === undefined ? DEFAULT_GATEWAY_PORT : Number(m[3]);
  if (!m || !(port > 0 && port < 65536)) throw new Error(`bad SSH gateway "${s}": expected host:port, e.g. controller.example:${DEFAULT_GATEWAY_PORT}`);
  return { host: (m[1] ?? m[2])!, port };
}

/** Flag, then DOZEN_SSH_GATEWAY, then the API's host on port 2222. */
export function gatewayFor(flag: string | undefined, env: string | undefined, apiUrl: string): Gateway {
  if (flag) return parseGateway(flag);
  if (env) return parseGateway(env);
  return { host: new URL(apiUrl).hostname.replace(/^\[|\]$/g, ''), port: DEFAULT_GATEWAY_PORT };
}

/** The OpenSSH command line: the gateway as the jump host (its user is the lease), root on the board. */
export function sshArgv(leaseId: string, boardIp: string, gw: Gateway, extra: string[] = []): string[] {
  // An IPv6 gateway needs the URI form: `-J user@::1:2222` would not parse.
  const jump = gw.host.includes(':') ? `ssh://${leaseId}@[${gw.host}]:${gw.port}` : `${leaseId}@${gw.host}:${gw.port}`;
  return ['ssh', '-J', jump, `root@${boardIp}`, ...extra];
}

/**
 * The leased board's address: the lease's `boardIp` (set at allocation); for a lease recorded before it
 * existed, its iSCSI record's when the target admits that address alone (`iscsi.initiatorAddress`), or
 * the board record, which only the admin may read (a tenant then passes --ip). The gateway compares the
 * destination with the board's IP as a string: no host names.
 */
export async function boardIpOf(api: Pick<ApiClient, 'call'>, lease: Lease): Promise<string> {
  if (lease.state === 'released') throw new Error(`lease ${lease.id} is released`);
  if (lease.kind !== 'board' || !lease.boardId) throw new Error(`lease ${lease.id} is a container, not a board: \`dozen ssh\` reaches boards`);
  if (lease.boardIp) return lease.boardIp;
  if (lease.iscsi?.initiatorAddress) return lease.iscsi.initiatorAddress;
  try {
    return (await api.call<{ ip: string }>('GET', `/boards/${encodeURIComponent(lease.boardId)}`)).ip;
  } catch (err) {
    if (err instanceof ApiError && err.status === 403) {
      throw new Error(`the API does not show this token board ${lease.boardId}'s address; pass it with --ip`, { cause: err });
    }
    throw err;
  }
}

const shellQuote = (a: string) => (/^[A-Za-z0-9_@%+=:,./[\]-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`);

/** Run ssh on this terminal; resolve with its exit code (a signal: 128 + its number). */
function run(argv: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: 'inherit' });
    // Ctrl-C is for ssh (it shares the terminal): stay until it exits and pass on its status.
    const ignore = () => {};
    process.on('SIGINT', ignore);
    child.once('error', (err: NodeJS.ErrnoException) => {
      process.off('SIGINT', ignore);
      reject(err.code === 'ENOENT' ? new Error('ssh not found: install the OpenSSH client', { cause: err }) : err);
    });
    child.once('exit', (code, signal) => {
      process.off('SIGINT', ignore);
      resolve(code ?? 128 + (signal === 'SIGINT' ? 2 : signal === 'SIGTERM' ? 15 : 1));
    });
  });
}

export function sshCommand(program: Command): void {
  program
    .command('ssh <leaseId> [sshArgs...]')
    .description('ssh to a leased board as root, through the controller\'s SSH gateway (arguments after -- go to ssh)')
    .option('--url <url>', 'server URL')
    .option('--token <token>', 'API token')
    .option('--gateway <host:port>', `the SSH gateway (default: $DOZEN_SSH_GATEWAY, else the API's host and the port GET /v1/ssh-gateway names, ${DEFAULT_GATEWAY_PORT} if none)`)
    .option('--ip <address>', "the board's address (default: from the lease, or the board record for an admin)")
    .option('--print', 'print the ssh command instead of running it')
    .option('--json', 'with --print: the argv as a JSON array')
    .action(async (leaseId: string, sshArgs: string[], o: Common & { gateway?: string; ip?: string; print?: boolean }) => {
      const api = await client(o);
      const gw = gatewayFor(o.gateway, process.env.DOZEN_SSH_GATEWAY || undefined, api.login.url);
      // Neither flag nor environment: the port the server says its gateway has (an older server: 2222).
      if (!o.gateway && !process.env.DOZEN_SSH_GATEWAY) gw.port = (await api.call<{ port: number | null }>('GET', '/ssh-gateway').catch(() => undefined))?.port ?? gw.port;
      const lease = await api.call<Lease>('GET', `/leases/${encodeURIComponent(leaseId)}`);
      const ip = o.ip ?? (await boardIpOf(api, lease));
      const argv = sshArgv(lease.id, ip, gw, sshArgs);
      if (o.print) {
        console.log(o.json ? JSON.stringify(argv) : argv.map(shellQuote).join(' '));
        return;
      }
      process.exitCode = await run(argv);
    });
}

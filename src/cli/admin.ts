import type { Command } from 'commander';
import type { Discovered, Tenant } from '../store/schema.js';
import { isMac, normalizeMac } from '../util/net.js';
import { client, common, type Common } from './context.js';
import { print } from './output.js';

/**
 * DHCP option 93 (client system architecture, RFC 4578 and IANA's registry) as a board arch: what
 * U-Boot (0x15, 0x16) or UEFI (0x0a, 0x0b) says it is, for `discovered enrol`'s default.
 */
export function archOfClient(clientArch: number | undefined): 'armv7' | 'arm64' | undefined {
  if (clientArch === 0x0a || clientArch === 0x15) return 'armv7';
  if (clientArch === 0x0b || clientArch === 0x16) return 'arm64';
  return undefined;
}

/** A new token: shown once, on stdout, alone on its line so it can be copied (or cut out by a script). */
function printToken(r: { token: string; tokenId: string; expiresAt?: string }, what: string): void {
  console.log(`${what}`);
  console.log(`token id: ${r.tokenId}${r.expiresAt ? `  (expires ${r.expiresAt})` : ''}`);
  console.log(`token:    ${r.token}`);
  console.error('This token is shown only once: store it now. Only its hash is kept; `dozen tokens revoke <token id>` ends it.');
}

/** Tenants and tokens (admin). */
export function tenantCommands(program: Command): void {
  const tenants = program.command('tenants').description('tenants (admin)');
  common(tenants.command('ls').description('list tenants')).action(async (o: Common) => {
    print(await (await client(o)).call<Tenant[]>('GET', '/tenants'), { ...o, columns: ['id', 'name', 'createdAt'] });
  });
  common(tenants.command('create <id>').description('create a tenant and its first token (shown once)'))
    .option('--name <name>', 'display name (default: the id)')
    .action(async (id: string, o: Common & { name?: string }) => {
      const r = await (await client(o)).call('POST', '/tenants', { id, name: o.name ?? id });
      if (o.json) print(r, o);
      else printToken(r, `created tenant ${r.tenant.id} (${r.tenant.name})`);
    });

  const tokens = program.command('tokens').description("tenants' API tokens (admin)");
  common(tokens.command('create <tenantId>').description('make another token for a tenant (shown once)'))
    .option('--expires <iso-time>', 'when it stops working, e.g. 2027-01-01T00:00:00Z')
    .action(async (tenantId: string, o: Common & { expires?: string }) => {
      const r = await (await client(o)).call('POST', `/tenants/${encodeURIComponent(tenantId)}/tokens`, o.expires ? { expiresAt: o.expires } : {});
      if (o.json) print(r, o);
      else printToken(r, `new token for tenant ${tenantId}`);
    });
  common(tokens.command('revoke <tokenId>').description('revoke a token: its requests and event streams end at once')).action(async (tokenId: string, o: Common) => {
    await (await client(o)).call('DELETE', `/tokens/${encodeURIComponent(tokenId)}`);
    print(o.json ? { revoked: tokenId } : `revoked ${tokenId}`, o);
  });
}

/** MACs that asked for DHCP but are not enrolled, and enrolling one as a board (admin). */
export function discoveredCommands(program: Command): void {
  const discovered = program.command('discovered').description('unknown MACs seen on the boot network (admin)');
  common(discovered.command('ls').description('list MACs that asked for DHCP but are not enrolled')).action(async (o: Common) => {
    const list = await (await client(o)).call<Discovered[]>('GET', '/discovered');
    const rows = list.map((d) => ({ ...d, arch: archOfClient(d.clientArch) ?? (d.clientArch !== undefined ? `0x${d.clientArch.toString(16)}` : undefined) }));
    print(o.json ? list : rows, { ...o, columns: ['mac', 'arch', 'vendorClass', 'count', 'firstSeen', 'lastSeen'] });
  });
  common(discovered.command('enrol <mac>').alias('enroll').description('enrol a discovered MAC as a board'))
    .requiredOption('--id <boardId>', 'the new board id')
    .requiredOption('--ip <ip>', 'reserved address on the boot network')
    .requiredOption('--image <name>', 'image it boots when not leased')
    .option('--model <model>', 'board model', 'bananapi')
    .option('--arch <arch>', 'armv7 or arm64 (default: what its DHCP request said, else armv7)')
    .option('--serial <path>', 'serial console: /dev/ttyUSB0 or tcp://host:port')
    .option('--power <json>', 'power driver and parameters as JSON', '{"driver":"manual"}')
    .option('--force', 'enrol it even if the server has not seen it ask for DHCP')
    .action(async (mac: string, o: Common & Record<string, string | boolean | undefined>) => {
      if (!isMac(mac)) throw new Error(`bad MAC address "${mac}": expected six hex pairs like 02:00:00:00:00:01`);
      const want = normalizeMac(mac);
      let power: unknown;
      try {
        power = JSON.parse(o.power as string);
      } catch (err) {
        throw new Error(`--power is not JSON: ${(err as Error).message}`, { cause: err });
      }
      const api = await client(o);
      const seen = (await api.call<Discovered[]>('GET', '/discovered')).find((d) => d.mac === want);
      if (!seen && !o.force) throw new Error(`${want} is not among the discovered MACs (see \`dozen discovered ls\`); --force enrols it anyway`);
      const arch = (o.arch as string | undefined) ?? archOfClient(seen?.clientArch) ?? 'armv7';
      const body = { id: o.id, mac: want, ip: o.ip, image: o.image, model: o.model, arch, power, ...(o.serial ? { serial: o.serial } : {}) };
      const board = await api.call('POST', '/boards', body);
      print(o.json ? board : `enrolled ${want} as board ${board.id} (${board.model}, ${board.arch}, ${board.ip}): ${board.state}`, o);
    });
}

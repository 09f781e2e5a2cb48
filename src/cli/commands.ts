import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { ApiClient, resolveLogin, saveLogin } from './context.js';
import { print } from './output.js';

interface Common {
  url?: string;
  token?: string;
  json?: boolean;
}

const client = async (o: Common) => new ApiClient(await resolveLogin(o));
const common = (c: Command) => c.option('--url <url>', 'server URL').option('--token <token>', 'API token').option('--json', 'print JSON');
const BOARD_COLS = ['id', 'model', 'arch', 'mac', 'ip', 'image', 'state', 'stateReason'];
const LEASE_COLS = ['id', 'kind', 'boardId', 'image', 'hostname', 'state', 'stateReason', 'expiresAt'];

/** Follow a job on the event stream, printing each step as it changes, until it ends. */
async function follow(api: ApiClient, jobId: string, json?: boolean): Promise<any> {
  const printed = new Map<string, string>();
  let final: any;
  const show = (job: any) => {
    for (const s of job.steps ?? []) {
      const key = `${s.state}:${s.attempts}`;
      if (printed.get(s.name) === key || s.state === 'pending') continue;
      printed.set(s.name, key);
      if (!json) console.error(`  ${s.state === 'done' ? '✓' : s.state === 'failed' ? '✗' : s.state === 'skipped' ? '-' : '…'} ${s.name}${s.attempts > 1 ? ` (attempt ${s.attempts})` : ''}${s.error ? `: ${s.error}` : ''}`);
    }
    if (job.state !== 'running') final = job;
    return job.state !== 'running';
  };
  const ctl = new AbortController();
  const stream = api.follow((type, data) => type === 'job' && data.id === jobId && show(data), ctl.signal);
  // the job may have ended before the stream opened: poll once it is connected
  const now = await api.call('GET', `/jobs/${jobId}`);
  if (show(now)) ctl.abort();
  await stream.catch((err) => {
    if (!ctl.signal.aborted) throw err;
  });
  return final ?? now;
}

export function registerClientCommands(program: Command): void {
  program
    .command('login')
    .description('save the server URL and token for later commands')
    .requiredOption('--url <url>', 'server URL, e.g. http://127.0.0.1:8080')
    .requiredOption('--token <token>', 'API token')
    .option('--json', 'print JSON')
    .action(async (o: Common) => {
      const api = new ApiClient({ url: o.url!.replace(/\/$/, ''), token: o.token! });
      const who = await api.call('GET', '/whoami');
      await saveLogin(api.login);
      print(o.json ? who : `logged in to ${o.url} as ${who.role === 'admin' ? 'admin' : `tenant ${who.tenant}`}`, o);
    });

  const boards = program.command('boards').description('the board inventory (admin)');
  common(boards.command('ls').description('list boards')).action(async (o: Common) => print(await (await client(o)).call('GET', '/boards'), { ...o, columns: BOARD_COLS }));
  common(boards.command('add <id>').description('enroll a board'))
    .requiredOption('--mac <mac>')
    .requiredOption('--ip <ip>', 'reserved address on the boot network')
    .requiredOption('--image <name>', 'image it boots when not leased')
    .option('--model <model>', 'board model', 'bananapi')
    .option('--arch <arch>', 'armv7 or arm64', 'armv7')
    .option('--serial <path>', 'serial console: /dev/ttyUSB0 or tcp://host:port')
    .option('--power <json>', 'power driver and parameters as JSON', '{"driver":"manual"}')
    .action(async (id: string, o: Common & Record<string, string>) => {
      const body = { id, mac: o.mac, ip: o.ip, image: o.image, model: o.model, arch: o.arch, power: JSON.parse(o.power!), ...(o.serial ? { serial: o.serial } : {}) };
      print(await (await client(o)).call('POST', '/boards', body), o);
    });
  common(boards.command('rm <id>').description('remove a board')).action(async (id: string, o: Common) => {
    await (await client(o)).call('DELETE', `/boards/${id}`);
    print(o.json ? { removed: id } : `removed ${id}`, o);
  });
  common(boards.command('maintenance <id>').description('take a board out of service (or --off to return it)'))
    .option('--off', 'end maintenance: the board is available again')
    .option('--reason <text>', 'why', 'operator')
    .action(async (id: string, o: Common & { off?: boolean; reason: string }) => {
      print(await (await client(o)).call('POST', `/boards/${id}/state`, { state: o.off ? 'available' : 'maintenance', reason: o.reason }), o);
    });

  const images = program.command('images').description('the image catalog');
  common(images.command('ls').description('list images')).action(async (o: Common) =>
    print(await (await client(o)).call('GET', '/images'), { ...o, columns: ['name', 'arch', 'kernel', 'initrd', 'rootDisk'] }),
  );

  const lease = program.command('lease').description('lease boards (or containers), reimage, power, release');
  common(lease.command('create').description('lease a board'))
    .requiredOption('--image <name>')
    .option('--board <id>')
    .option('--model <model>')
    .option('--arch <arch>')
    .option('--kind <kind>', 'board, container or any', 'board')
    .option('--ssh-key <file...>', 'public key file(s) to install')
    .option('--hostname <name>')
    .option('--expires <iso-time>')
    .option('--memory <mib>', 'container memory limit')
    .option('--cpus <n>', 'container CPUs')
    .option('--no-wait', 'return once the lease is recorded')
    .action(async (o: Common & Record<string, any>) => {
      const api = await client(o);
      const sshKeys = await Promise.all(((o.sshKey as string[]) ?? []).map(async (f) => (await readFile(f, 'utf8')).trim()));
      const body = {
        image: o.image,
        kind: o.kind,
        sshKeys,
        ...(o.board ? { board: o.board } : {}),
        ...(o.model ? { model: o.model } : {}),
        ...(o.arch ? { arch: o.arch } : {}),
        ...(o.hostname ? { hostname: o.hostname } : {}),
        ...(o.expires ? { expiresAt: o.expires } : {}),
        ...(o.memory ? { memory: Number(o.memory) } : {}),
        ...(o.cpus ? { cpus: Number(o.cpus) } : {}),
      };
      const r = await api.call('POST', '/leases', body);
      if (!o.json) console.error(`lease ${r.lease.id} on ${r.lease.boardId ?? 'a container'}: provisioning`);
      const job = o.wait ? await follow(api, r.job.id, o.json) : r.job;
      print(o.json ? { lease: await api.call('GET', `/leases/${r.lease.id}`), job } : await api.call('GET', `/leases/${r.lease.id}`), o);
      if (job.state === 'failed') process.exitCode = 1;
    });
  common(lease.command('ls').description('list your leases')).action(async (o: Common) => print(await (await client(o)).call('GET', '/leases'), { ...o, columns: LEASE_COLS }));
  common(lease.command('show <id>').description('show a lease')).action(async (id: string, o: Common) => print(await (await client(o)).call('GET', `/leases/${id}`), o));
  common(lease.command('reimage <id>').description('a fresh disk from the image, then boot'))
    .option('--image <name>', 'switch to another image')
    .option('--no-wait')
    .action(async (id: string, o: Common & { image?: string; wait: boolean }) => {
      const api = await client(o);
      const r = await api.call('POST', `/leases/${id}/reimage`, o.image ? { image: o.image } : {});
      const job = o.wait ? await follow(api, r.job.id, o.json) : r.job;
      print(o.json ? { lease: r.lease, job } : await api.call('GET', `/leases/${id}`), o);
      if (job.state === 'failed') process.exitCode = 1;
    });
  common(lease.command('power <id> <action>').description('on, off or cycle')).action(async (id: string, action: string, o: Common) =>
    print(await (await client(o)).call('POST', `/leases/${id}/power`, { action }), o),
  );
  common(lease.command('release <id>').description('power off, wipe, return the board'))
    .option('--no-wait')
    .action(async (id: string, o: Common & { wait: boolean }) => {
      const api = await client(o);
      const r = await api.call('DELETE', `/leases/${id}`);
      const job = o.wait ? await follow(api, r.job.id, o.json) : r.job;
      print(o.json ? { lease: await api.call('GET', `/leases/${id}`), job } : `lease ${id}: ${(await api.call('GET', `/leases/${id}`)).state}`, o);
      if (job.state === 'failed') process.exitCode = 1;
    });
}

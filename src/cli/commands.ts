import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import type { StepName } from '../leases/steps.js';
import type { Job, JobStep } from '../store/schema.js';
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

/** A lease job as the API shows it; its step names are the server's (src/leases/steps.ts). */
type LeaseJob = Omit<Job, 'steps'> & { steps: Array<JobStep & { name: StepName }> };

/** Follow a job on the event stream, printing each step as it changes, until it ends. */
async function follow(api: ApiClient, jobId: string, json?: boolean): Promise<LeaseJob> {
  const printed = new Map<StepName, string>();
  let final: LeaseJob | undefined;
  const show = (job: LeaseJob) => {
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

/** One line of progress on stderr: phase, bar, bytes. */
function progressBar(job: { phase: string; bytesDone: number; bytesTotal: number | null }): void {
  const mb = (n: number) => `${(n / 1e6).toFixed(0)} MB`;
  const frac = job.bytesTotal ? Math.min(1, job.bytesDone / job.bytesTotal) : 0;
  const bar = job.bytesTotal ? `[${'#'.repeat(Math.round(frac * 30)).padEnd(30)}] ${(frac * 100).toFixed(0)}%` : '';
  process.stderr.write(`\r  ${job.phase.padEnd(10)} ${bar} ${mb(job.bytesDone)}${job.bytesTotal ? ` / ${mb(job.bytesTotal)}` : ''}   `);
}

/** Stream a local file as the request body; the spec travels in a header. */
async function upload(api: ApiClient, file: string, spec: object): Promise<any> {
  const { createReadStream, statSync } = await import('node:fs');
  const { Readable } = await import('node:stream');
  const res = await fetch(`${api.login.url}/v1/images`, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${api.login.token}`,
      'content-type': 'application/octet-stream',
      'content-length': String(statSync(file).size),
      'x-dozen-import': JSON.stringify(spec),
    },
    body: Readable.toWeb(createReadStream(file)) as unknown as BodyInit,
    duplex: 'half',
  } as RequestInit);
  const json = (await res.json()) as any;
  if (!res.ok) throw new Error(`${res.status}: ${json?.error ?? res.statusText}`);
  return json;
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
  common(boards.command('ls').description('list boards')).action(async (o: Common) => print(await (await client(o)).list('/boards'), { ...o, columns: BOARD_COLS }));
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
  common(images.command('ls').description('list images')).action(async (o: Common) => {
    const list = (await (await client(o)).call('GET', '/images')) as Array<{ name: string; arches: Record<string, { kernel: string; rootDisk?: string | null; dtbs?: Record<string, string> }> }>;
    // One row per image and arch: an image may carry several.
    const rows = list.flatMap((i) => Object.entries(i.arches).map(([arch, a]) => ({ name: i.name, arch, kernel: a.kernel, rootDisk: a.rootDisk ?? '', dtbs: Object.keys(a.dtbs ?? {}).join(',') })));
    print(o.json ? list : rows, { ...o, columns: ['name', 'arch', 'kernel', 'rootDisk', 'dtbs'] });
  });

  common(images.command('import <disk>').description('import a disk image (raw, .xz, .gz, .zst, qcow2): a path on the server, or --upload'))
    .requiredOption('--name <name>', 'image name')
    .option('--arch <arch>', 'armv7 or arm64 (default: from the kernel)')
    .option('--sha256 <hex>', 'expected SHA-256 of the file')
    .option('--kernel <path>', 'kernel file on the server (default: from the disk’s boot partition)')
    .option('--initrd <path>', 'initrd file on the server')
    .option('--cmdline <template>', 'kernel command-line template')
    .option('--upload', 'send the file from this machine instead of naming a path on the server')
    .action(async (disk: string, o: Common & Record<string, any>) => {
      const api = await client(o);
      const spec = {
        name: o.name,
        ...(o.arch ? { arch: o.arch } : {}),
        ...(o.sha256 ? { sha256: o.sha256 } : {}),
        ...(o.cmdline ? { cmdline: o.cmdline } : {}),
        ...(o.kernel ? { files: { kernel: o.kernel, ...(o.initrd ? { initrd: o.initrd } : {}) } } : {}),
      };
      let job = o.upload ? await upload(api, disk, spec) : await api.call('POST', '/images', { ...spec, source: { path: disk } });
      while (job.state === 'running') {
        if (!o.json) progressBar(job);
        await new Promise((r) => setTimeout(r, 500));
        job = await api.call('GET', `/images/jobs/${job.id}`);
      }
      if (!o.json) process.stderr.write('\n');
      if (job.state === 'failed') {
        process.exitCode = 1;
        if (!o.json) console.error(`import failed: ${job.error?.message}`);
      }
      print(o.json ? job : job.state === 'succeeded' ? `imported ${job.image.name} (${Object.keys(job.image.arches).join(', ')})` : job.state, o);
    });

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
  common(lease.command('ls').description('list your leases')).action(async (o: Common) => print(await (await client(o)).list('/leases'), { ...o, columns: LEASE_COLS }));
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
  common(lease.command('power <id> <action>').description('on, off or cycle (a job: follow it, or cancel it with `dozen job cancel`)'))
    .option('--no-wait', 'return once the job is recorded')
    .action(async (id: string, action: string, o: Common & { wait: boolean }) => {
      const api = await client(o);
      const r = await api.call('POST', `/leases/${id}/power`, { action });
      if (!o.json) console.error(`lease ${id}: power ${action}, job ${r.job.id}`);
      const job = o.wait ? await follow(api, r.job.id, o.json) : r.job;
      print(o.json ? { lease: r.lease, job } : `lease ${id}: power ${action} ${job.state}${job.error ? `: ${job.error}` : ''}`, o);
      if (job.state === 'failed') process.exitCode = 1;
    });
  common(lease.command('release <id>').description('power off, wipe, return the board'))
    .option('--no-wait')
    .action(async (id: string, o: Common & { wait: boolean }) => {
      const api = await client(o);
      const r = await api.call('DELETE', `/leases/${id}`);
      const job = o.wait ? await follow(api, r.job.id, o.json) : r.job;
      print(o.json ? { lease: await api.call('GET', `/leases/${id}`), job } : `lease ${id}: ${(await api.call('GET', `/leases/${id}`)).state}`, o);
      if (job.state === 'failed') process.exitCode = 1;
    });

  const jobs = program.command('job').description('lease jobs');
  common(jobs.command('cancel <id>').description('cancel a running power job (a provision or reimage is stopped by releasing its lease)')).action(async (id: string, o: Common) => {
    const j = await (await client(o)).call('POST', `/jobs/${id}/cancel`);
    print(o.json ? j : `job ${id}: ${j.state}${j.error ? ` (${j.error})` : ''}`, o);
  });
}

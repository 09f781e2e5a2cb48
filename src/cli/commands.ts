import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { pipeline, Readable } from 'node:stream';
import type { Command } from 'commander';
import type { StepName } from '../leases/steps.js';
import type { Job, JobStep } from '../store/schema.js';
import { boardEventsCommand } from './events.js';
import { ApiClient, ApiError, client, common, saveLogin, type Common } from './context.js';
import { print } from './output.js';
import { counting, Progress } from './progress.js';

const BOARD_COLS = ['id', 'model', 'arch', 'mac', 'ip', 'image', 'role', 'state', 'engine', 'stateReason'];
const TENANT_BOARD_COLS = ['id', 'model', 'arch', 'available'];
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

/** An import source: a file on this machine, or an http(s) URL the CLI downloads and passes on. */
async function openSource(source: string): Promise<{ body: Readable; length: number | null }> {
  if (/^https?:\/\//i.test(source)) {
    const res = await fetch(source, { headers: { 'accept-encoding': 'identity' } }).catch((err: Error) => {
      throw new Error(`cannot fetch ${source}: ${(err.cause as Error | undefined)?.message ?? err.message}`, { cause: err });
    });
    if (!res.ok || !res.body) throw new Error(`cannot fetch ${source}: ${res.status} ${res.statusText}`);
    const length = Number(res.headers.get('content-length') ?? NaN);
    return { body: Readable.fromWeb(res.body as import('node:stream/web').ReadableStream), length: Number.isFinite(length) ? length : null };
  }
  const size = await stat(source).then(
    (st) => st.size,
    (err: Error) => {
      throw new Error(`cannot read ${source}: ${(err as NodeJS.ErrnoException).code ?? err.message}`, { cause: err });
    },
  );
  return { body: createReadStream(source), length: size };
}

/** Stream the disk image as the request body (progress: the bytes sent); the spec travels in a header. */
async function upload(api: ApiClient, source: { body: Readable; length: number | null }, spec: object, progress?: Progress): Promise<any> {
  const counted = pipeline(source.body, counting((n) => progress?.update({ phase: 'upload', bytesDone: n, bytesTotal: source.length })), () => {});
  const res = await fetch(`${api.login.url}/v1/images`, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${api.login.token}`,
      'content-type': 'application/octet-stream',
      ...(source.length !== null ? { 'content-length': String(source.length) } : {}),
      'x-dozen-import': JSON.stringify(spec),
    },
    body: Readable.toWeb(counted) as unknown as BodyInit,
    duplex: 'half',
  } as RequestInit).catch((err: Error) => {
    throw new Error(`upload to ${api.login.url} failed: ${(err.cause as Error | undefined)?.message ?? err.message}`, { cause: err });
  });
  const text = await res.text();
  const json = text ? JSON.parse(text) : undefined;
  if (!res.ok) throw new ApiError(res.status, `${res.status}: ${json?.error ?? res.statusText}`);
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
  common(boards.command('ls').description('list boards')).action(async (o: Common) => {
    const list = await (await client(o)).list('/boards');
    // a tenant sees which boards exist and whether they are free, not their addresses
    if (list.length && !('mac' in list[0])) return print(list, { ...o, columns: TENANT_BOARD_COLS });
    // admins: a shared board's engine in one word (ready, waiting, …) and why it is not ready
    const rows = o.json ? list : list.map((b: Record<string, any>) => ({ ...b, role: b.role ?? 'whole', engine: b.engine ? `${b.engine.engine}${b.engine.reason ? ` (${b.engine.reason})` : ''}` : '' }));
    print(rows, { ...o, columns: BOARD_COLS });
  });
  common(boards.command('set <id>').description('change a board: --role shared (the controller runs containers on it) or whole (back to whole-board leases)'))
    .requiredOption('--role <role>', 'shared or whole')
    .action(async (id: string, o: Common & { role: string }) => {
      if (o.role !== 'shared' && o.role !== 'whole') throw new Error(`--role: shared or whole, not ${JSON.stringify(o.role)}`);
      print(await (await client(o)).call('POST', `/boards/${id}/role`, { role: o.role }), o);
    });
  common(boards.command('drain <id>').description("move every container lease off a shared board (each keeps its changes and /data), then mark it drained"))
    .option('--no-wait', 'return once the drain has started')
    .action(async (id: string, o: Common & { wait: boolean }) => {
      const c = await client(o);
      const started = await c.call('POST', `/boards/${id}/drain`);
      if (!o.wait) return print(started, o);
      let drain = started.drain;
      while (drain?.state === 'running') {
        await new Promise((r) => setTimeout(r, 1000));
        drain = (await c.call('GET', `/boards/${id}/engine`)).drain;
      }
      if (o.json) print(drain, o);
      const rows = [
        ...drain.moved.map((m: Record<string, any>) => ({ lease: m.leaseId, to: m.to, downtime: `${(m.downtimeMs / 1000).toFixed(1)} s`, bytes: m.bytesMoved, error: '' })),
        ...drain.failed.map((f: Record<string, any>) => ({ lease: f.leaseId, to: '', downtime: '', bytes: '', error: f.error })),
      ];
      if (!o.json) print(rows, { ...o, columns: ['lease', 'to', 'downtime', 'bytes', 'error'] });
      if (drain.state !== 'done') throw new Error(`board ${id}: the drain ${drain.state}`);
    });
  common(boards.command('undrain <id>').description('put a drained shared board back in service')).action(async (id: string, o: Common) => {
    print(await (await client(o)).call('POST', `/boards/${id}/undrain`), o);
  });
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
  boardEventsCommand(boards);
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

  common(images.command('import <source>').description('import a disk image (raw, .xz, .gz, .zst, qcow2): a path on the server, a file sent with --upload, or an http(s) URL the CLI downloads and sends'))
    .requiredOption('--name <name>', 'image name')
    .option('--arch <arch>', 'armv7 or arm64 (default: from the kernel)')
    .option('--sha256 <hex>', 'expected SHA-256 of the file')
    .option('--kernel <path>', 'kernel file on the server (default: from the disk’s boot partition)')
    .option('--initrd <path>', 'initrd file on the server')
    .option('--cmdline <template>', 'kernel command-line template')
    .option('--upload', 'send the file from this machine instead of naming a path on the server (a URL is always sent)')
    .action(async (source: string, o: Common & Record<string, any>) => {
      const api = await client(o);
      const spec = {
        name: o.name,
        ...(o.arch ? { arch: o.arch } : {}),
        ...(o.sha256 ? { sha256: o.sha256 } : {}),
        ...(o.cmdline ? { cmdline: o.cmdline } : {}),
        ...(o.kernel ? { files: { kernel: o.kernel, ...(o.initrd ? { initrd: o.initrd } : {}) } } : {}),
      };
      // a bar on a terminal, plain lines in logs and pipes, nothing with --json
      const progress = o.json ? undefined : new Progress({ tty: Boolean(process.stderr.isTTY), write: (t) => process.stderr.write(t) });
      const sent = o.upload || /^https?:\/\//i.test(source);
      let job = sent ? await upload(api, await openSource(source), spec, progress) : await api.call('POST', '/images', { ...spec, source: { path: source } });
      // 201: the import ended while we sent it, and the answer is the image itself
      if (job && !('state' in job) && 'arches' in job) job = { state: 'succeeded', image: job };
      while (job.state === 'running') {
        progress?.update(job);
        await new Promise((r) => setTimeout(r, 500));
        job = await api.call('GET', `/images/jobs/${job.id}`);
      }
      progress?.done();
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

/**
 * Image import through the real HTTP router (src/images/routes.ts) on a real express app: raw,
 * .img.xz, .gz and qcow2 disks, uploaded or named by server path; kernel/initrd/device trees taken
 * from the disk's boot partition or given as files; progress; and every kind of bad input, each
 * of which must leave nothing behind in <dataDir>/images.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, statSync, writeFileSync, writeSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import express, { type ErrorRequestHandler } from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ImageCatalog } from '../../src/images/catalog.js';
import { ImageImporter } from '../../src/images/import.js';
import type { ImportJobView } from '../../src/images/import-jobs.js';
import { imagesRouter } from '../../src/images/routes.js';
import { HttpError } from '../../src/util/errors.js';
import { makeImageRoot } from '../helpers/fixtures.js';
import { requireTools } from '../helpers/tools.js';
import { until } from '../helpers/until.js';

const ADMIN = 'Bearer admin-secret';
const TENANT = 'Bearer tenant-secret';
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const shaFile = (f: string) => sha(readFileSync(f));

// --- test data: fake kernels (just the magic), device trees, ext4 file systems, partitioned disks ---

function zImage(): Buffer {
  const k = Buffer.alloc(256 * 1024, 0x5a);
  k.writeUInt32LE(0x016f2818, 0x24);
  return k;
}
function arm64Image(): Buffer {
  const k = Buffer.alloc(256 * 1024, 0x41);
  k.writeUInt32LE(0x644d5241, 0x38); // 'ARM\x64'
  return k;
}
function dtb(tag: string): Buffer {
  const d = Buffer.alloc(4096);
  d.writeUInt32BE(0xd00dfeed, 0);
  d.write(tag, 64);
  return d;
}

let work: string;

/** An ext4 file system image holding `files` (path → bytes), made by mkfs.ext4 -d: no root, no mount. */
function ext4(name: string, files: Record<string, Buffer>, sizeMb = 8): string {
  const src = mkdtempSync(join(work, `${name}-src-`));
  for (const [p, data] of Object.entries(files)) {
    mkdirSync(join(src, p, '..'), { recursive: true });
    writeFileSync(join(src, p), data);
  }
  const img = join(work, `${name}.ext4`);
  execFileSync('mke2fs', ['-q', '-F', '-t', 'ext4', '-d', src, img, `${sizeMb}M`]);
  return img;
}

/** A disk with an MBR: each file system at a 1 MiB-aligned offset; the first partition is flagged bootable. */
function mbrDisk(name: string, parts: Array<{ fs: string; type: number }>): string {
  const disk = join(work, `${name}.img`);
  const mbr = Buffer.alloc(512);
  mbr.writeUInt32LE(0x1234abcd, 440);
  let lba = 2048;
  const placed: Array<{ fs: string; lba: number }> = [];
  for (const [i, p] of parts.entries()) {
    const sectors = Math.ceil(statSync(p.fs).size / 512);
    const e = 446 + i * 16;
    mbr[e] = i === 0 ? 0x80 : 0;
    mbr[e + 4] = p.type;
    mbr.writeUInt32LE(lba, e + 8);
    mbr.writeUInt32LE(sectors, e + 12);
    placed.push({ fs: p.fs, lba });
    lba += Math.ceil(sectors / 2048) * 2048;
  }
  mbr[510] = 0x55;
  mbr[511] = 0xaa;
  const fd = openSync(disk, 'w');
  writeSync(fd, mbr, 0, 512, 0);
  for (const p of placed) writeSync(fd, readFileSync(p.fs), 0, statSync(p.fs).size, p.lba * 512);
  closeSync(fd);
  execFileSync('truncate', ['-s', String(lba * 512), disk]);
  return disk;
}

const KVER = '6.1.0-99-armmp';
let rootfsDisk: string; // a whole-disk ext4 (no partition table) with the kernel in /boot, like images/debian-12's root.img
let bootDisk: string; // MBR: 1 = ext4 boot partition (vmlinuz, initrd.img, dtbs/), 2 = ext4 root
let plainDisk: string; // a whole-disk ext4 with no kernel at all
let kernelFile: string;
let arm64Kernel: string;
let initrdFile: string;
let dtbFile: string;

// --- the API under test -----------------------------------------------------------------------------

let dataDir: string;
let imagesDir: string;
let server: Server;
let base: string;
let catalog: ImageCatalog;
let importer: ImageImporter;
const users = new Map<string, string>(); // image → who uses it (the inUse callback)
const dropped: string[] = []; // what onDelete was told (the disk store drops its copy there)

beforeAll(async () => {
  requireTools('mke2fs', 'debugfs', 'xz', 'qemu-img', 'truncate');
  work = mkdtempSync(join(tmpdir(), 'import-data-'));
  kernelFile = join(work, 'zImage');
  writeFileSync(kernelFile, zImage());
  arm64Kernel = join(work, 'Image');
  writeFileSync(arm64Kernel, arm64Image());
  initrdFile = join(work, 'initrd');
  writeFileSync(initrdFile, Buffer.alloc(100_000, 0x11));
  dtbFile = join(work, 'sun7i-a20-bananapi.dtb');
  writeFileSync(dtbFile, dtb('given'));

  rootfsDisk = ext4('rootfs', {
    [`boot/vmlinuz-${KVER}`]: zImage(),
    [`boot/initrd.img-${KVER}`]: Buffer.alloc(200_000, 0x22),
    [`usr/lib/linux-image-${KVER}/sun7i-a20-bananapi.dtb`]: dtb('bananapi'),
    [`usr/lib/linux-image-${KVER}/sun7i-a20-bananapro.dtb`]: dtb('bananapro'),
    'etc/os-release': Buffer.from('ID=debian\n'),
  });
  const boot = ext4('boot', {
    vmlinuz: zImage(),
    'initrd.img': Buffer.alloc(150_000, 0x33),
    'dtbs/sun7i-a20-bananapi.dtb': dtb('boot-bananapi'),
  });
  const root = ext4('root', { 'etc/os-release': Buffer.from('ID=debian\n') }, 16);
  bootDisk = mbrDisk('boot', [
    { fs: boot, type: 0x83 },
    { fs: root, type: 0x83 },
  ]);
  plainDisk = ext4('plain', { 'etc/hostname': Buffer.from('x\n') });

  dataDir = mkdtempSync(join(tmpdir(), 'import-api-'));
  imagesDir = join(dataDir, 'images');
  mkdirSync(imagesDir);
  catalog = new ImageCatalog([{ dir: imagesDir }, { dir: makeImageRoot('builtin'), sub: 'build' }]);
  importer = new ImageImporter({
    catalog,
    dir: imagesDir,
    inUse: async (name) => users.get(name) ?? null,
    onDelete: async (name) => void dropped.push(name),
  });

  const app = express();
  app.use(express.json());
  const auth = (req: express.Request, admin: boolean) => {
    const h = req.headers.authorization;
    if (h !== ADMIN && h !== TENANT) throw new HttpError(401, 'missing or invalid token');
    if (admin && h !== ADMIN) throw new HttpError(403, 'admin only');
  };
  app.use(imagesRouter({ catalog, importer, requireAdmin: (req) => auth(req, true), requireReader: (req) => auth(req, false) }));
  app.use(((err, _req, res, _next) => {
    if (err instanceof HttpError) res.status(err.status).json({ error: err.message, ...(err.details ? { details: err.details } : {}) });
    else res.status(500).json({ error: String(err?.message ?? err) });
  }) as ErrorRequestHandler);
  server = app.listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
}, 60_000);

afterAll(async () => {
  server?.closeAllConnections();
  await new Promise((r) => server?.close(r));
});

async function call(method: string, path: string, opts: { json?: unknown; body?: Buffer; headers?: Record<string, string>; token?: string } = {}) {
  const headers: Record<string, string> = { authorization: opts.token ?? ADMIN, ...opts.headers };
  let body: string | Blob | undefined;
  if (opts.json !== undefined) {
    headers['content-type'] = 'application/json';
    body = JSON.stringify(opts.json);
  } else if (opts.body) {
    headers['content-type'] ??= 'application/octet-stream';
    body = new Blob([new Uint8Array(opts.body)]);
  }
  const res = await fetch(base + path, { method, headers, body });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : undefined, location: res.headers.get('location') };
}

/** Poll the job over HTTP until it ends. */
async function waitJob(id: string): Promise<ImportJobView> {
  return until(`import job ${id} ending`, async () => {
    const r = await call('GET', `/images/jobs/${id}`);
    expect(r.status).toBe(200);
    return r.body.state !== 'running' ? (r.body as ImportJobView) : undefined;
  }, { timeoutMs: 30_000, intervalMs: 50 });
}

/** Imported image directories (and any leftovers: .import-*, .delete-*). */
const onDisk = () => readdirSync(imagesDir).sort();

function expectImageFiles(name: string, manifest: any) {
  const dir = join(imagesDir, name);
  const saved = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
  expect(saved).toEqual(manifest);
  const a = manifest.arches.armv7;
  expect(Object.keys(manifest.arches)).toEqual(['armv7']); // an import is one arch
  const files = [a.kernel, a.rootDisk, ...(a.initrd ? [a.initrd] : []), ...Object.values(a.dtbs)];
  expect(Object.keys(manifest.sha256).sort()).toEqual([...files].sort());
  for (const [f, h] of Object.entries(manifest.sha256)) expect(shaFile(join(dir, f)), f).toBe(h);
}

describe('importing disk images', () => {
  it('raw upload: a whole-disk ext4 (no partition table), kernel, initrd and dtbs found in its /boot and /usr/lib/linux-image-*', async () => {
    const disk = readFileSync(rootfsDisk);
    const r = await call('POST', '/images?wait=1&name=rawfs&arch=armv7', { body: disk });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    const m = r.body;
    expect(m).toMatchObject({
      name: 'rawfs',
      arches: {
        armv7: {
          kernel: 'vmlinuz',
          initrd: 'initrd.img',
          rootDisk: 'root.img',
          dtbs: { bananapi: 'dtbs/sun7i-a20-bananapi.dtb', bananapro: 'dtbs/sun7i-a20-bananapro.dtb' },
        },
      },
      iscsiSyntax: 'debian',
      imported: { source: 'upload', format: 'raw', sha256: sha(disk) },
    });
    const uuid = execFileSync('debugfs', ['-R', 'stats', rootfsDisk], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).match(/Filesystem UUID:\s+(\S+)/)![1];
    expect(m.cmdline).toBe(`console={{console}} root=UUID=${uuid} rw`);
    expectImageFiles('rawfs', m);
    // The root disk is the upload, byte for byte, and stored sparse.
    const rootImg = join(imagesDir, 'rawfs', 'root.img');
    expect(shaFile(rootImg)).toBe(sha(disk));
    expect(statSync(rootImg).blocks * 512).toBeLessThan(disk.length);
    expect(readFileSync(join(imagesDir, 'rawfs', 'dtbs/sun7i-a20-bananapro.dtb')).toString('latin1')).toContain('bananapro');

    const one = await call('GET', '/images/rawfs', { token: TENANT });
    expect(one.status).toBe(200);
    expect(one.body).toMatchObject({ name: 'rawfs', builtIn: false, arches: { armv7: { rootDisk: 'root.img' } } });
    const all = await call('GET', '/images', { token: TENANT });
    expect(all.body.map((i: any) => [i.name, i.builtIn])).toEqual(expect.arrayContaining([['rawfs', false], ['builtin', true]]));
  });

  it('.img.xz from a server path, checksum verified, as a job whose progress can be followed', async () => {
    const xz = join(work, 'boot.img.xz');
    execFileSync('sh', ['-c', `xz -T1 -3 -c "${bootDisk}" > "${xz}"`]);
    const updates: Array<{ phase: string; done: number; total: number | null }> = [];
    const onProgress = (v: ImportJobView) => v.name === 'xzdisk' && updates.push({ phase: v.phase, done: v.bytesDone, total: v.bytesTotal });
    importer.jobs.on('progress', onProgress);
    try {
      const r = await call('POST', '/images', { json: { name: 'xzdisk', arch: 'armv7', source: { path: xz }, sha256: shaFile(xz).toUpperCase() } });
      expect(r.status, JSON.stringify(r.body)).toBe(202);
      expect(r.body).toMatchObject({ name: 'xzdisk', state: 'running' });
      expect(r.location).toBe(`/v1/images/jobs/${r.body.id}`);
      const job = await waitJob(r.body.id);
      expect(job.state, JSON.stringify(job)).toBe('succeeded');
      expect(job.phase).toBe('done');
      expect(job.notes.join('\n')).toMatch(/MBR partition table: 1: ext4 \d+ MiB \(boot\), 2: ext4/);
      expect(job.notes.join('\n')).toMatch(/from partition 1 \(ext4\): kernel \/vmlinuz, initrd \/initrd\.img, device trees bananapi=\/dtbs\/sun7i-a20-bananapi\.dtb/);
      expect(job.image).toMatchObject({ name: 'xzdisk', arches: { armv7: { dtbs: { bananapi: 'dtbs/sun7i-a20-bananapi.dtb' } } }, imported: { format: 'xz', sha256: shaFile(xz) } });
      // root=PARTUUID of the root partition: MBR disk signature 1234abcd, partition 2.
      expect(job.image!.cmdline).toBe('console={{console}} root=PARTUUID=1234abcd-02 rw');
      expect(shaFile(join(imagesDir, 'xzdisk', 'root.img'))).toBe(shaFile(bootDisk));
      expectImageFiles('xzdisk', job.image);
    } finally {
      importer.jobs.off('progress', onProgress);
    }
    // Progress: the expand phase counted the compressed input up to its size; the checksum phase counted every output byte.
    const expand = updates.filter((u) => u.phase === 'expand');
    expect(expand.at(-1)).toEqual({ phase: 'expand', done: statSync(xz).size, total: statSync(xz).size });
    const sums = updates.filter((u) => u.phase === 'checksum');
    expect(sums.at(-1)!.done).toBe(sums.at(-1)!.total);
    expect(sums.at(-1)!.total).toBeGreaterThan(statSync(bootDisk).size);
  });

  it('.gz upload with the spec in X-Dozen-Import: the boot partition named, device trees given as paths on it', async () => {
    const gz = gzipSync(readFileSync(bootDisk));
    const spec = { name: 'gzdisk', arch: 'armv7', sha256: sha(gz), boot: { partition: 1, kernel: '/vmlinuz', dtbs: { bananapro: '/dtbs/sun7i-a20-bananapi.dtb' } }, cmdline: 'console={{console}} root=/dev/sda2 rw' };
    const updates: number[] = [];
    const onProgress = (v: ImportJobView) => v.name === 'gzdisk' && v.phase === 'receive' && updates.push(v.bytesDone);
    importer.jobs.on('progress', onProgress);
    const r = await call('POST', '/images?wait=true', { body: gz, headers: { 'x-dozen-import': JSON.stringify(spec), 'content-type': 'application/gzip' } });
    importer.jobs.off('progress', onProgress);
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    expect(r.body).toMatchObject({ name: 'gzdisk', arches: { armv7: { initrd: 'initrd.img', dtbs: { bananapro: 'dtbs/sun7i-a20-bananapi.dtb' } } }, cmdline: spec.cmdline, imported: { format: 'gz' } });
    expect(updates.at(-1)).toBe(gz.length); // the upload's bytes were counted as they arrived
    expect(shaFile(join(imagesDir, 'gzdisk', 'root.img'))).toBe(shaFile(bootDisk));
    expectImageFiles('gzdisk', r.body);
  });

  it('qcow2 from a server path, converted with qemu-img; dracut iSCSI syntax recorded', async () => {
    const q = join(work, 'boot.qcow2');
    execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', bootDisk, q]);
    const r = await call('POST', '/images?wait=1', { json: { name: 'qdisk', source: { path: q }, iscsiSyntax: 'dracut' } });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    expect(r.body).toMatchObject({ name: 'qdisk', arches: { armv7: {} }, iscsiSyntax: 'dracut', imported: { format: 'qcow2', sha256: shaFile(q) } });
    expect(shaFile(join(imagesDir, 'qdisk', 'root.img'))).toBe(shaFile(bootDisk));
    expectImageFiles('qdisk', r.body);
  });

  it('kernel, initrd and device tree given as files on the server, for a disk without a kernel', async () => {
    const r = await call('POST', '/images?wait=1', {
      json: { name: 'given', source: { path: plainDisk }, files: { kernel: kernelFile, initrd: initrdFile, dtbs: { bananapi: dtbFile } } },
    });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    expect(r.body).toMatchObject({ arches: { armv7: { kernel: 'vmlinuz', initrd: 'initrd.img', dtbs: { bananapi: 'dtbs/sun7i-a20-bananapi.dtb' } } } });
    expect(shaFile(join(imagesDir, 'given', 'vmlinuz'))).toBe(shaFile(kernelFile));
    expectImageFiles('given', r.body);
  });
});

describe('bad input is refused clearly and leaves nothing behind', () => {
  let before: string[];
  const expectNothingLeft = async (name: string) => {
    expect(onDisk()).toEqual(before);
    expect((await call('GET', `/images/${name}`)).status).toBe(404);
  };

  beforeAll(() => {
    before = onDisk();
  });

  it('checksum mismatch → 400, and the job says so', async () => {
    const r = await call('POST', '/images?wait=1', { json: { name: 'badsum', source: { path: rootfsDisk }, sha256: 'ab'.repeat(32) } });
    expect(r.status).toBe(400);
    expect(r.body.error).toMatch(/^checksum mismatch: the file's sha256 is [0-9a-f]{64}, expected (ab){32}/);
    expect(r.body.details.job).toMatchObject({ state: 'failed', error: { status: 400 } });
    expect((await call('GET', `/images/jobs/${r.body.details.job.id}`)).body.state).toBe('failed');
    await expectNothingLeft('badsum');
  });

  it('truncated .xz → 400 corrupt or truncated', async () => {
    const xz = execFileSync('xz', ['-c', '-0', rootfsDisk], { maxBuffer: 64 << 20 });
    const r = await call('POST', '/images?wait=1&name=badxz', { body: xz.subarray(0, Math.floor(xz.length / 2)) });
    expect(r.status).toBe(400);
    expect(r.body.error).toMatch(/^corrupt or truncated xz file: .*(Unexpected end of input|truncated)/i);
    await expectNothingLeft('badxz');
  });

  it('truncated .gz → 400 corrupt or truncated', async () => {
    const gz = gzipSync(readFileSync(rootfsDisk));
    const r = await call('POST', '/images?wait=1&name=badgz', { body: gz.subarray(0, gz.length - 100) });
    expect(r.status).toBe(400);
    expect(r.body.error).toMatch(/^corrupt or truncated gzip file: unexpected end of file/);
    await expectNothingLeft('badgz');
  });

  it('truncated qcow2 → 400', async () => {
    const q = join(work, 'cut.qcow2');
    execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', rootfsDisk, q]);
    execFileSync('truncate', ['-s', String(Math.floor(statSync(q).size / 2)), q]);
    const r = await call('POST', '/images?wait=1', { json: { name: 'badq', source: { path: q } } });
    expect(r.status).toBe(400);
    expect(r.body.error).toMatch(/qcow2/);
    await expectNothingLeft('badq');
  });

  it('not a disk (random bytes) → 400 not a disk image', async () => {
    const junk = Buffer.alloc(4 << 20);
    for (let i = 0; i < junk.length; i += 4) junk.writeUInt32LE((i * 2654435761) >>> 0, i);
    const r = await call('POST', '/images?wait=1&name=junk', { body: junk });
    expect(r.status).toBe(400);
    expect(r.body.error).toMatch(/^not a disk image: no MBR or GPT partition table and no file system/);
    await expectNothingLeft('junk');
  });

  it('the format named does not match the file → 400', async () => {
    const r = await call('POST', '/images?wait=1', { json: { name: 'fmt', source: { path: rootfsDisk }, format: 'xz' } });
    expect(r.status).toBe(400);
    expect(r.body.error).toBe('format says xz, but the file is not compressed (raw)');
    await expectNothingLeft('fmt');
  });

  it('wrong arch: an arm64 kernel for an armv7 import → 400 naming both', async () => {
    const r = await call('POST', '/images?wait=1', { json: { name: 'wrongarch', arch: 'armv7', source: { path: plainDisk }, files: { kernel: arm64Kernel } } });
    expect(r.status).toBe(400);
    expect(r.body.error).toBe("wrong arch: the import says armv7, but the kernel is arm64 (arm64 Image magic 'ARM\\x64' at 0x38)");
    await expectNothingLeft('wrongarch');
  });

  it('a kernel that is no kernel → 400', async () => {
    const r = await call('POST', '/images?wait=1', { json: { name: 'nokernel', source: { path: plainDisk }, files: { kernel: initrdFile } } });
    expect(r.status).toBe(400);
    expect(r.body.error).toMatch(/^the kernel is not one we can boot/);
    await expectNothingLeft('nokernel');
  });

  it('no kernel anywhere on the disk → 400 saying where it looked', async () => {
    const r = await call('POST', '/images?wait=1', { json: { name: 'nowhere', source: { path: plainDisk } } });
    expect(r.status).toBe(400);
    expect(r.body.error).toMatch(/^cannot take the boot files from the disk: no a kernel .* in the disk's file system \(ext4\)/);
    await expectNothingLeft('nowhere');
  });

  it('a device tree that is not one → 400', async () => {
    const r = await call('POST', '/images?wait=1', { json: { name: 'baddtb', source: { path: plainDisk }, files: { kernel: kernelFile, dtbs: { bananapi: initrdFile } } } });
    expect(r.status).toBe(400);
    expect(r.body.error).toMatch(/device tree for bananapi is not a flattened device tree/);
    await expectNothingLeft('baddtb');
  });

  it('invalid requests → 400 naming the field, before any job starts', async () => {
    const bad = await call('POST', '/images', { json: { name: 'Bad Name!', source: { path: rootfsDisk } } });
    expect(bad.status).toBe(400);
    expect(bad.body.error).toMatch(/name/);
    const missing = await call('POST', '/images', { json: { name: 'nosrc', source: { path: '/nonexistent/disk.img' } } });
    expect(missing).toMatchObject({ status: 400, body: { error: 'source.path: /nonexistent/disk.img does not exist on the server' } });
    const neither = await call('POST', '/images', { json: { name: 'neither' } });
    expect(neither.status).toBe(400);
    expect((await call('POST', '/images', { body: Buffer.from('x'), headers: { 'content-type': 'text/plain' } })).status).toBe(415);
    expect(importer.jobs.list().filter((j) => ['nosrc', 'neither'].includes(j.name))).toEqual([]);
    expect(onDisk()).toEqual(before);
  });

  it('only the admin may import or delete; tenants may read', async () => {
    expect((await call('POST', '/images', { json: { name: 'x', source: { path: rootfsDisk } }, token: TENANT })).status).toBe(403);
    expect((await call('DELETE', '/images/rawfs', { token: TENANT })).status).toBe(403);
    expect((await call('GET', '/images', { token: 'Bearer nope' })).status).toBe(401);
    expect(onDisk()).toEqual(before);
  });

  it('a name that exists (imported or built in) → 409', async () => {
    for (const name of ['rawfs', 'builtin']) {
      const r = await call('POST', '/images', { json: { name, source: { path: rootfsDisk } } });
      expect(r.status).toBe(409);
      expect(r.body.error).toBe(`image ${name} already exists; delete it first or pick another name`);
    }
  });
});

describe('deleting images', () => {
  it('refuses an image in use with the reason (409), deletes it once free (204)', async () => {
    users.set('given', 'lease l-123 on board lab-1');
    const busy = await call('DELETE', '/images/given');
    expect(busy).toMatchObject({ status: 409, body: { error: 'image given is in use: lease l-123 on board lab-1' } });
    expect(existsSync(join(imagesDir, 'given', 'root.img'))).toBe(true);
    expect(dropped).toEqual([]);
    users.delete('given');
    expect((await call('DELETE', '/images/given')).status).toBe(204);
    expect(dropped).toEqual(['given']);
    expect(existsSync(join(imagesDir, 'given'))).toBe(false);
    expect(onDisk().filter((n) => n.startsWith('.'))).toEqual([]);
    expect((await call('GET', '/images/given')).status).toBe(404);
    expect((await call('DELETE', '/images/given')).status).toBe(404);
  });

  it('refuses to delete a built-in image (409)', async () => {
    const r = await call('DELETE', '/images/builtin');
    expect(r.status).toBe(409);
    expect(r.body.error).toMatch(/^image builtin is built in/);
  });

  it('recover() removes what an interrupted import left', async () => {
    mkdirSync(join(imagesDir, '.import-deadbeef'));
    writeFileSync(join(imagesDir, '.import-deadbeef', 'root.img'), 'x');
    expect(await importer.recover()).toEqual(['.import-deadbeef']);
    expect(onDisk().filter((n) => n.startsWith('.'))).toEqual([]);
  });
});

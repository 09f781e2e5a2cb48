import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { copyFile, mkdir, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join, resolve, sep } from 'node:path';
import type { Readable } from 'node:stream';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { z } from 'zod';
import type { Logger } from '../log.js';
import { ARCHES, type Arch } from '../store/schema.js';
import { BadRequestError, ConflictError, HttpError, NotFoundError } from '../util/errors.js';
import { ISCSI_SYNTAXES, imageNameSchema, manifestSchema, type ImageCatalog, type Manifest } from './catalog.js';
import { findBootFiles } from './boot-files.js';
import { readDiskLayout, type DiskLayout } from './disk-layout.js';
import { DISK_FORMATS, expandDisk, readHead, sha256File, sniffFormat, type DiskFormat } from './expand.js';
import { ImportJobs, type ImportJob, type ImportJobView } from './import-jobs.js';
import { isDeviceTree, kernelKind } from './kernel-arch.js';

const imagePath = z.string().regex(/^\/[A-Za-z0-9._+@/-]*$/, 'an absolute path inside the image (letters, digits, ._+@-/)');
const serverPath = z.string().startsWith('/', 'an absolute path on the server');

/** What `POST /v1/images` takes (as JSON; for an upload, the same fields without `source`). */
export const importSpecSchema = z
  .object({
    name: imageNameSchema,
    /** Checked against the kernel; taken from the kernel when absent. */
    arch: z.enum(ARCHES).optional(),
    /** A disk image file on the server. Absent when the disk is the request body (an upload). */
    source: z.object({ path: serverPath }).strict().optional(),
    /** Container format; 'auto' (default) goes by the file's magic bytes. */
    format: z.enum(['auto', ...DISK_FORMATS]).default('auto'),
    /** SHA-256 of the file as given (compressed, if it is): the import fails when it differs. */
    sha256: z
      .string()
      .regex(/^[0-9a-fA-F]{64}$/, '64 hex digits')
      .transform((s) => s.toLowerCase())
      .optional(),
    /** Kernel command-line template; default `console={{console}} root=<UUID or PARTUUID of the root> rw`. */
    cmdline: z.string().min(1).max(4096).optional(),
    iscsiSyntax: z.enum(ISCSI_SYNTAXES).default('debian'),
    /** Kernel, initrd, device trees as files on the server (otherwise they come from the disk). */
    files: z
      .object({ kernel: serverPath, initrd: serverPath.optional(), dtbs: z.record(z.string().min(1), serverPath).optional() })
      .strict()
      .optional(),
    /** Where on the disk to take them from: partition number, paths inside it. */
    boot: z
      .object({ partition: z.number().int().min(1).max(128).optional(), kernel: imagePath.optional(), initrd: imagePath.optional(), dtbs: z.record(z.string().min(1), imagePath).optional() })
      .strict()
      .optional(),
  })
  .strict();
export type ImportSpec = z.infer<typeof importSpecSchema>;

export interface ImportLimits {
  /** Largest raw disk an import may expand to. */
  diskBytes: number;
  /** Largest upload body. */
  uploadBytes: number;
  kernelBytes: number;
  initrdBytes: number;
  dtbBytes: number;
}
export const DEFAULT_LIMITS: ImportLimits = {
  diskBytes: 64 * 2 ** 30,
  uploadBytes: 32 * 2 ** 30,
  kernelBytes: 128 * 2 ** 20,
  initrdBytes: 512 * 2 ** 20,
  dtbBytes: 4 * 2 ** 20,
};
const MIN_DISK = 1 << 20;

export interface ImageImporterOptions {
  catalog: ImageCatalog;
  /** Where imported images live: `<dataDir>/images`, the catalog's first root. */
  dir: string;
  /** Why an image may not be deleted now (a lease or board uses it), or null. */
  inUse: (name: string) => string | null | Promise<string | null>;
  /**
   * Runs after the in-use check, before the image goes: drop what others keep of it (the disk
   * store's import of its root disk). Throwing (an HttpError 409, say) keeps the image.
   */
  onDelete?: (name: string) => Promise<void>;
  jobs?: ImportJobs;
  limits?: Partial<ImportLimits>;
  log?: Logger;
}

/** The files an imported image directory holds, by their names in the manifest. */
const FILE = { disk: 'root.img', kernel: 'vmlinuz', initrd: 'initrd.img', upload: '.upload' } as const;

/**
 * Imports disk images into `<dataDir>/images/<name>/` and deletes them. Each import is a job
 * (src/images/import-jobs.ts) working in `<dir>/.import-<job>/`, which is renamed to `<dir>/<name>/`
 * only when everything checked out: a failed or interrupted import leaves no image behind, and
 * the catalog (which skips dot-directories) never sees a half-made one.
 */
export class ImageImporter {
  readonly jobs: ImportJobs;
  readonly limits: ImportLimits;
  private readonly dir: string;

  constructor(private readonly o: ImageImporterOptions) {
    this.jobs = o.jobs ?? new ImportJobs();
    this.limits = { ...DEFAULT_LIMITS, ...o.limits };
    this.dir = resolve(o.dir);
  }

  /** Remove what interrupted imports and deletions left (call once at startup); returns what it removed. */
  async recover(): Promise<string[]> {
    const names = await readdir(this.dir).catch(() => [] as string[]);
    const stale = names.filter((n) => n.startsWith('.import-') || n.startsWith('.delete-'));
    for (const n of stale) await rm(join(this.dir, n), { recursive: true, force: true });
    return stale;
  }

  /**
   * Start an import. Checks what it can at once (name free, source readable) and throws an
   * HttpError (400/409) for those; everything else is reported by the job. With `upload`, the
   * disk is read from that stream; `received` settles once it is all on disk.
   */
  async start(spec: ImportSpec, upload?: { stream: Readable; length: number | null }): Promise<{ job: ImportJob; received: Promise<void> }> {
    if (!upload && !spec.source) throw new BadRequestError('give source.path (a disk image on the server) or upload the disk as the request body');
    if (upload && spec.source) throw new BadRequestError('give either source.path or an upload body, not both');
    if (upload?.length != null && upload.length > this.limits.uploadBytes) {
      throw new HttpError(413, `upload of ${upload.length} bytes is over the limit of ${this.limits.uploadBytes}`);
    }
    await this.checkNameFree(spec.name);
    if (spec.source) await checkReadableFile(spec.source.path, 'source.path');
    for (const [what, p] of Object.entries({ 'files.kernel': spec.files?.kernel, 'files.initrd': spec.files?.initrd })) {
      if (p) await checkReadableFile(p, what);
    }
    for (const [model, p] of Object.entries(spec.files?.dtbs ?? {})) await checkReadableFile(p, `files.dtbs.${model}`);

    const job = this.jobs.create(spec.name);
    const tmp = join(this.dir, `.import-${job.id}`);
    await mkdir(tmp, { recursive: true });
    this.o.log?.info({ job: job.id, image: spec.name, source: spec.source?.path ?? 'upload' }, 'image import started');

    const received = upload ? this.receive(job, upload, join(tmp, FILE.upload)) : Promise.resolve(null);
    const finished = received
      .then((uploadSha) => this.run(job, spec, tmp, uploadSha))
      .then(
        (manifest) => {
          job.succeed(manifest);
          this.o.log?.info({ job: job.id, image: spec.name }, 'image imported');
        },
        async (err) => {
          await rm(tmp, { recursive: true, force: true }).catch(() => {});
          job.fail(err);
          this.o.log?.warn({ job: job.id, image: spec.name, err: (err as Error).message }, 'image import failed');
        },
      );
    void finished;
    return { job, received: received.then(() => undefined) };
  }

  /** Delete an imported image; built-in images and images in use are refused (409). */
  async delete(name: string): Promise<void> {
    this.o.catalog.invalidate();
    const image = await this.o.catalog.get(name);
    if (!image) throw new NotFoundError(`image ${name}`);
    if (!resolve(image.dir).startsWith(this.dir + sep)) {
      throw new ConflictError(`image ${name} is built in (${image.dir}), not imported; it cannot be deleted through the API`);
    }
    const why = await this.o.inUse(name);
    if (why) throw new ConflictError(`image ${name} is in use: ${why}`);
    await this.o.onDelete?.(name);
    // Out of the catalog's sight in one step, then removed at leisure.
    const gone = join(this.dir, `.delete-${randomBytes(6).toString('hex')}`);
    await rename(image.dir, gone);
    this.o.catalog.invalidate();
    await rm(gone, { recursive: true, force: true });
    this.o.log?.info({ image: name }, 'image deleted');
  }

  private async checkNameFree(name: string): Promise<void> {
    this.o.catalog.invalidate();
    if (await this.o.catalog.get(name)) throw new ConflictError(`image ${name} already exists; delete it first or pick another name`);
    const running = this.jobs.running(name);
    if (running) throw new ConflictError(`image ${name} is being imported (job ${running.id})`);
    if (await stat(join(this.dir, name)).catch(() => null)) {
      throw new ConflictError(`${join(this.dir, name)} exists but is not a valid image; remove it first`);
    }
  }

  /** Phase receive: the request body to a file, counted and hashed on the way. */
  private async receive(job: ImportJob, upload: { stream: Readable; length: number | null }, dest: string): Promise<string> {
    job.phase('receive', upload.length);
    const hash = createHash('sha256');
    let n = 0;
    const limit = this.limits.uploadBytes;
    const meter = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        n += chunk.length;
        if (n > limit) return cb(new HttpError(413, `upload is over the limit of ${limit} bytes`));
        hash.update(chunk);
        job.progress(n);
        cb(null, chunk);
      },
    });
    try {
      await pipeline(upload.stream, meter, createWriteStream(dest));
    } catch (err) {
      if (err instanceof HttpError) throw err;
      throw new BadRequestError(`the upload was cut off after ${n} bytes: ${(err as Error).message}`);
    }
    if (upload.length !== null && n !== upload.length) throw new BadRequestError(`the upload was cut off: ${n} of ${upload.length} bytes arrived`);
    if (n === 0) throw new BadRequestError('the upload is empty');
    return hash.digest('hex');
  }

  private async run(job: ImportJob, spec: ImportSpec, tmp: string, uploadSha: string | null): Promise<Manifest> {
    const src = spec.source?.path ?? join(tmp, FILE.upload);
    const disk = join(tmp, FILE.disk);
    const srcSize = (await stat(src)).size;
    if (srcSize === 0) throw new BadRequestError(`${spec.source?.path ?? 'the upload'} is empty`);

    // --- format and checksum of the file as given
    const sniffed = sniffFormat(await readHead(src));
    if (spec.format !== 'auto' && spec.format !== sniffed) {
      throw new BadRequestError(`format says ${spec.format}, but the file is ${sniffed === 'raw' ? 'not compressed (raw)' : sniffed}`);
    }
    job.note(`source ${spec.source?.path ?? 'upload'}: ${srcSize} bytes, ${sniffed}`);
    let sourceSha = uploadSha;
    const verify = (actual: string) => {
      if (spec.sha256 && actual !== spec.sha256) {
        throw new BadRequestError(`checksum mismatch: the file's sha256 is ${actual}, expected ${spec.sha256} (corrupt or wrong file)`);
      }
    };
    if (sourceSha) verify(sourceSha);
    else if (sniffed === 'qcow2') {
      // qemu-img reads the file itself, so hash it first.
      job.phase('verify', srcSize);
      sourceSha = await sha256File(src, (n) => job.progress(n));
      verify(sourceSha);
    }

    // --- expand to a sparse raw disk
    job.phase('expand', srcSize);
    const expanded = await expandDisk(src, sniffed, disk, { onBytes: (n) => job.progress(n), maxBytes: this.limits.diskBytes });
    sourceSha ??= expanded.sha256;
    if (sourceSha) verify(sourceSha);
    if (spec.source === undefined) await rm(src, { force: true });
    if (expanded.size < MIN_DISK) throw new BadRequestError(`the disk is ${expanded.size} bytes: too small to be a disk image (at least 1 MiB)`);
    job.note(`disk: ${expanded.size} bytes raw`);

    // --- what is on it
    job.phase('inspect');
    let layout: DiskLayout | null;
    try {
      layout = await readDiskLayout(disk);
    } catch (err) {
      throw new BadRequestError(`the disk's partition table is broken: ${(err as Error).message}`);
    }
    if (!layout) {
      throw new BadRequestError(
        'not a disk image: no MBR or GPT partition table and no file system at its start ' +
          '(a compressed file in a format other than xz, gzip, zstd or qcow2?)',
      );
    }
    job.note(
      layout.table === 'none'
        ? `a whole-disk ${layout.fs.type} file system (no partition table), UUID ${layout.fs.uuid ?? '?'}`
        : `${layout.table.toUpperCase()} partition table: ` +
            layout.partitions.map((p) => `${p.index}: ${p.fs?.type ?? p.typeName ?? p.type} ${Math.round(p.size / 2 ** 20)} MiB${p.bootable ? ' (boot)' : ''}`).join(', '),
    );

    // --- kernel, initrd, device trees
    job.phase('boot-files');
    const files = await this.bootFiles(job, spec, tmp, disk, layout);
    const kind = await kernelKind(join(tmp, files.kernel));
    if (!kind) {
      throw new BadRequestError('the kernel is not one we can boot: no ARM zImage, arm64 Image, uImage or ELF header (a compressed or foreign file?)');
    }
    if (spec.arch && kind.arch !== spec.arch) {
      throw new BadRequestError(`wrong arch: the import says ${spec.arch}, but the kernel is ${kind.arch} (${kind.evidence})`);
    }
    const arch: Arch = kind.arch;
    job.note(`kernel: ${kind.format} for ${arch} (${kind.evidence})`);

    const cmdline = spec.cmdline ?? defaultCmdline(layout);
    if (!spec.cmdline) job.note(`cmdline (default): ${cmdline}`);

    // --- checksums of everything the image holds
    const names = [FILE.disk, files.kernel, ...(files.initrd ? [files.initrd] : []), ...Object.values(files.dtbs)];
    const sizes = await Promise.all(names.map(async (f) => (await stat(join(tmp, f))).size));
    job.phase('checksum', sizes.reduce((a, b) => a + b, 0));
    const sha256: Record<string, string> = {};
    let done = 0;
    for (const [i, f] of names.entries()) {
      sha256[f] = await sha256File(join(tmp, f), (n) => job.progress(done + n));
      done += sizes[i]!;
    }

    // --- manifest, then the rename that makes the image exist
    job.phase('install');
    const manifest = manifestSchema.parse({
      name: spec.name,
      arch,
      kernel: files.kernel,
      ...(files.initrd ? { initrd: files.initrd } : {}),
      dtbs: files.dtbs,
      cmdline,
      rootDisk: FILE.disk,
      iscsiSyntax: spec.iscsiSyntax,
      sha256,
      imported: { at: new Date().toISOString(), source: spec.source?.path ?? 'upload', format: sniffed, ...(sourceSha ? { sha256: sourceSha } : {}) },
    });
    await writeFile(join(tmp, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
    const final = join(this.dir, spec.name);
    this.o.catalog.invalidate();
    if (await this.o.catalog.get(spec.name)) throw new ConflictError(`image ${spec.name} appeared while importing (another source?)`);
    try {
      await rename(tmp, final);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOTEMPTY' || code === 'EEXIST') throw new ConflictError(`${final} appeared while importing`);
      throw err;
    }
    this.o.catalog.invalidate();
    return manifest;
  }

  /** Copy kernel, initrd and device trees into the image directory; returns their names there. */
  private async bootFiles(job: ImportJob, spec: ImportSpec, tmp: string, disk: string, layout: DiskLayout): Promise<{ kernel: string; initrd?: string; dtbs: Record<string, string> }> {
    const L = this.limits;
    const out: { kernel: string; initrd?: string; dtbs: Record<string, string> } = { kernel: FILE.kernel, dtbs: {} };
    const dtbName = (model: string, from: string) => `dtbs/${safeBase(from, model)}`;
    await mkdir(join(tmp, 'dtbs'), { recursive: true });

    if (spec.files) {
      await copyChecked(spec.files.kernel, join(tmp, FILE.kernel), 'kernel', L.kernelBytes);
      if (spec.files.initrd) {
        await copyChecked(spec.files.initrd, join(tmp, FILE.initrd), 'initrd', L.initrdBytes);
        out.initrd = FILE.initrd;
      }
      for (const [model, p] of Object.entries(spec.files.dtbs ?? {})) {
        out.dtbs[model] = dtbName(model, p);
        await copyChecked(p, join(tmp, out.dtbs[model]), `device tree for ${model}`, L.dtbBytes);
      }
      job.note(`kernel${out.initrd ? ', initrd' : ''}${Object.keys(out.dtbs).length ? ', device trees' : ''} from files on the server`);
      if (!spec.boot) return checkDtbs(tmp, out);
    }

    let found;
    try {
      found = await findBootFiles(disk, layout, spec.boot ?? {});
    } catch (err) {
      throw new BadRequestError(`cannot take the boot files from the disk: ${(err as Error).message}; give boot.partition/boot.kernel or files.kernel`);
    }
    try {
      const take = async (from: string, to: string, what: string, max: number) => {
        await found.reader.copyOut(from, join(tmp, to));
        await checkSize(join(tmp, to), what, max);
      };
      if (!spec.files) {
        await take(found.kernel, FILE.kernel, 'kernel', L.kernelBytes);
        if (found.initrd) {
          await take(found.initrd, FILE.initrd, 'initrd', L.initrdBytes);
          out.initrd = FILE.initrd;
        }
      }
      const fromDisk: string[] = [];
      for (const [model, p] of Object.entries(found.dtbs)) {
        if (out.dtbs[model]) continue; // a file given on the server wins
        out.dtbs[model] = dtbName(model, p);
        await take(p, out.dtbs[model], `device tree ${p}`, L.dtbBytes);
        fromDisk.push(`${model}=${p}`);
      }
      job.note(
        `from ${found.where}: ` +
          [!spec.files && `kernel ${found.kernel}`, !spec.files && (found.initrd ? `initrd ${found.initrd}` : 'no initrd'), fromDisk.length ? `device trees ${fromDisk.join(' ')}` : 'no device trees']
            .filter(Boolean)
            .join(', '),
      );
    } finally {
      await found.reader.close();
    }
    return checkDtbs(tmp, out);
  }
}

async function checkDtbs<T extends { dtbs: Record<string, string> }>(dir: string, files: T): Promise<T> {
  for (const [model, p] of Object.entries(files.dtbs)) {
    if (!isDeviceTree(await readHead(join(dir, p), 4))) throw new BadRequestError(`the device tree for ${model} is not a flattened device tree (no 0xd00dfeed magic)`);
  }
  return files;
}

/** A default command line that finds the root the way the image's initramfs can: by UUID or PARTUUID. */
export function defaultCmdline(layout: DiskLayout): string {
  if (layout.table === 'none') {
    if (!layout.fs.uuid) throw new BadRequestError('the disk is a file system without a UUID; give cmdline with root=');
    return `console={{console}} root=UUID=${layout.fs.uuid} rw`;
  }
  const parts = layout.partitions;
  const rootType = parts.find((p) => /Linux root/.test(p.typeName ?? ''));
  const linux = parts
    .filter((p) => p.fs && ['ext2', 'ext3', 'ext4', 'btrfs', 'xfs'].includes(p.fs.type))
    .sort((a, b) => b.size - a.size)[0];
  const root = rootType ?? linux;
  if (!root?.partuuid) throw new BadRequestError('cannot tell which partition is the root file system; give cmdline with root=');
  return `console={{console}} root=PARTUUID=${root.partuuid} rw`;
}

function safeBase(p: string, fallback: string): string {
  const b = p.split('/').pop() ?? '';
  return /^[A-Za-z0-9._+-]+$/.test(b) && !b.startsWith('.') ? b : `${fallback}.dtb`;
}

async function checkReadableFile(p: string, what: string): Promise<void> {
  const st = await stat(p).catch(() => null);
  if (!st) throw new BadRequestError(`${what}: ${p} does not exist on the server`);
  if (!st.isFile()) throw new BadRequestError(`${what}: ${p} is not a regular file`);
}

async function checkSize(p: string, what: string, max: number): Promise<void> {
  const size = (await stat(p)).size;
  if (size === 0) throw new BadRequestError(`the ${what} is empty`);
  if (size > max) throw new BadRequestError(`the ${what} is ${size} bytes, more than the limit of ${max}`);
}

async function copyChecked(from: string, to: string, what: string, max: number): Promise<void> {
  await checkSize(from, what, max);
  await copyFile(from, to);
}

export type { ImportJobView, DiskFormat };

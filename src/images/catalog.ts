import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { ARCHES, type Arch } from '../store/schema.js';

export const ISCSI_SYNTAXES = ['debian', 'dracut'] as const;
export type IscsiSyntax = (typeof ISCSI_SYNTAXES)[number];

const relPath = z
  .string()
  .min(1)
  .refine((p) => !p.startsWith('/') && !p.split('/').includes('..'), 'must be a relative path inside the image');

/** What one architecture of an image boots: kernel, initrd, device trees and root disk. */
export const archBootSchema = z.looseObject({
  kernel: relPath,
  initrd: relPath.optional(),
  /** Device trees by the kernel's file name (what a board model names, src/inventory/models.ts). */
  dtbs: z.record(z.string(), relPath).default({}),
  rootDisk: relPath.nullable().optional(),
  /** Debian's kernel flavour (armmp, arm64): a model that needs another one cannot boot it. */
  flavour: z.string().optional(),
});
export type ArchBoot = z.infer<typeof archBootSchema>;

export const imageNameSchema = z.string().regex(/^[a-z0-9][a-z0-9._-]{0,63}$/);

const common = {
  name: imageNameSchema,
  /** Kernel command line; `{{console}}` is replaced by the board model's console device. */
  cmdline: z.string(),
  /**
   * How the image's initramfs is told its iSCSI root: 'debian' (initramfs-tools + open-iscsi:
   * `iscsi_initiator= iscsi_target_name= iscsi_target_ip= ...`) or 'dracut' (`root=iscsi:...`,
   * `rd.iscsi.*`). Only meaningful with a rootDisk.
   */
  iscsiSyntax: z.enum(ISCSI_SYNTAXES).default('debian'),
  sha256: z.record(z.string(), z.string()).optional(),
  /** Set by the import (src/images/import.ts): when and from what. */
  imported: z
    .object({ at: z.string(), source: z.string(), format: z.string(), sha256: z.string().optional() })
    .optional(),
};

/** An image with several architectures in it: `arches.armv7`, `arches.arm64`. */
const multiArchSchema = z.object({ ...common, arches: z.partialRecord(z.enum(ARCHES), archBootSchema) });
/** The one-architecture form (imported images, older builds): read as `arches: { [arch]: {...} }`. */
const singleArchSchema = z.object({
  ...common,
  arch: z.enum(ARCHES),
  kernel: relPath,
  initrd: relPath.optional(),
  dtbs: z.record(z.string(), relPath).default({}),
  rootDisk: relPath.nullable().optional(),
});

export const manifestSchema = z
  .union([multiArchSchema, singleArchSchema])
  .transform((m) => {
    if (!('arch' in m)) return m;
    const { arch, kernel, initrd, dtbs, rootDisk, ...rest } = m;
    return { ...rest, arches: { [arch]: { kernel, initrd, dtbs, rootDisk } } as Partial<Record<Arch, ArchBoot>> };
  })
  .refine((m) => Object.keys(m.arches).length > 0, 'an image needs at least one architecture in "arches"');
export type Manifest = z.infer<typeof manifestSchema>;

/** The architectures an image boots, in ARCHES order. */
export function imageArches(m: Manifest): Arch[] {
  return ARCHES.filter((a) => m.arches[a]);
}

/** What an image boots on `arch`, or null when it has nothing for it. */
export function archBoot(m: Manifest, arch: Arch): ArchBoot | null {
  return m.arches[arch] ?? null;
}

export interface Image {
  name: string;
  /** Directory holding the manifest and the files it names. */
  dir: string;
  manifest: Manifest;
}

/** A directory of images: each `<dir>/<name>/<sub>/manifest.json` is one (sub: 'build' for built-in images). */
export interface ImageRoot {
  dir: string;
  sub?: string;
}

/** How long past its expiry a scan may still answer for a name it knows (changes outside the API: API imports invalidate()). */
const STALE_MAX_MS = 30_000;

/** Images found under the configured roots; the first root wins a name. Rescanned at most every `ttlMs`. */
export class ImageCatalog {
  private cache: { at: number; images: Map<string, Image>; problems: string[] } | null = null;
  /**
   * The scan in flight, shared: when the cache expires under load (a DHCP storm asks for every
   * request), one scan of the image folders serves every caller instead of one scan each.
   */
  private inflight: { gen: number; scan: Promise<NonNullable<ImageCatalog['cache']>> } | null = null;
  /** Bumped by invalidate(): a scan begun before it may have missed the change, so nobody after it waits on it. */
  private gen = 0;
  /** Scans of the image folders done (tests and metrics: concurrent callers share one). */
  readonly stats = { scans: 0 };
  constructor(
    private readonly roots: ImageRoot[],
    private readonly ttlMs = 2000,
  ) {}

  async list(): Promise<Image[]> {
    return [...(await this.scan()).images.values()];
  }

  async get(name: string): Promise<Image | null> {
    const known = this.cache?.images.get(name);
    const age = this.cache ? Date.now() - this.cache.at : 0;
    if (known && age >= this.ttlMs && age < this.ttlMs + STALE_MAX_MS) {
      // Expired a little, and the name is known: answered at once while one rescan runs behind it. A
      // board's kernel request otherwise waited on the image folders (2-3 ms after every quiet 2 s). A
      // name the old scan lacks (an image just added), or an older scan, waits for the rescan as before.
      this.scan().catch(() => {});
      return known;
    }
    return (await this.scan()).images.get(name) ?? null;
  }

  /** Manifests that exist but could not be read: reported, never fatal. */
  async problems(): Promise<string[]> {
    return (await this.scan()).problems;
  }

  invalidate(): void {
    this.cache = null;
    this.gen++;
  }

  private scan(): Promise<NonNullable<ImageCatalog['cache']>> {
    if (this.cache && Date.now() - this.cache.at < this.ttlMs) return Promise.resolve(this.cache);
    if (this.inflight?.gen === this.gen) return this.inflight.scan;
    const gen = this.gen;
    const scan = this.scanFolders().then((found) => {
      if (gen === this.gen) this.cache = found; // an invalidate() meanwhile wants a scan that starts after it
      return found;
    });
    const entry = { gen, scan };
    this.inflight = entry;
    const clear = () => {
      if (this.inflight === entry) this.inflight = null;
    };
    scan.then(clear, clear);
    return scan;
  }

  private async scanFolders(): Promise<NonNullable<ImageCatalog['cache']>> {
    this.stats.scans++;
    const images = new Map<string, Image>();
    const problems: string[] = [];
    for (const root of this.roots) {
      let names: string[];
      try {
        names = await readdir(root.dir);
      } catch {
        continue;
      }
      for (const name of names.sort()) {
        if (name.startsWith('.')) continue; // imports in progress and deletions (src/images/import.ts)
        const dir = join(root.dir, name, root.sub ?? '');
        const file = join(dir, 'manifest.json');
        if (!(await stat(file).catch(() => null))) continue;
        try {
          const manifest = manifestSchema.parse(JSON.parse(await readFile(file, 'utf8')));
          if (!images.has(manifest.name)) images.set(manifest.name, { name: manifest.name, dir, manifest });
        } catch (err) {
          problems.push(`${file}: ${(err as Error).message}`);
        }
      }
    }
    return { at: Date.now(), images, problems };
  }
}

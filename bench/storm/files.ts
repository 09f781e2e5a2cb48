/**
 * The bytes every server serves. Our server renders each board's boot script / pxelinux config itself
 * (src/boot/files.ts) and serves images/test/<file> from the image directory; the reference servers get
 * one TFTP root laid out with the same paths, the generated files rendered by the same code
 * (InventoryBootDecider + src/boot/render.ts, the same boot spec our server computes for an enrolled
 * board without a lease), the image files copied.
 *
 *   images/test/vmlinuz, images/test/initrd.img, images/test/dtbs/<dtb>   as our server names them
 *   boards/<id>/boot.scr.uimg     a boot.scr board's script (our server serves this path too; it is
 *                                 the reference servers' DHCP boot file: a plain TFTP root cannot answer
 *                                 "boot.scr.uimg" per asking board as ours does)
 *   pxelinux.cfg/01-<mac>         a pxe board's config
 *
 * A boot script's header carries its creation time (ours: when it is fetched), so scripts are compared
 * past their 64-byte header; everything else byte for byte (size + CRC-32).
 */
import { copyFile, mkdir, readFile, writeFile, chmod } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { crc32 } from 'node:zlib';
import { loadConfig, REPO_ROOT } from '../../src/config.js';
import { InventoryBootDecider } from '../../src/boot/decider.js';
import { bootScriptImage, pxelinuxName, renderPxelinux } from '../../src/boot/render.js';
import { ImageCatalog } from '../../src/images/catalog.js';
import type { Inventory } from '../../src/inventory/boards.js';
import type { Board } from '../../src/store/schema.js';
import type { Expect, Plan, StormBoard } from './plan.js';

export const IMAGE = 'test';
const SCRIPT_TIME = 1_700_000_000;

export interface ServedFiles {
  files: Plan['files'];
  generated: Plan['generated'];
  /** The reference servers' DHCP boot file per board id. */
  refBootfile: Record<string, string>;
}

const expectOf = (b: Buffer): Expect => ({ size: b.length, crc: crc32(b) });

/** Board records as our server holds them once enrolled (state available, image test, no lease). */
export function boardRecord(b: StormBoard): Board {
  return { id: b.id, mac: b.mac, model: b.model, arch: 'armv7', ip: b.ip, power: { driver: 'manual' }, image: IMAGE, state: 'available', createdAt: new Date(0).toISOString() };
}

/** Writes the reference TFTP root under `root` and returns what every file must contain. */
export async function buildServedFiles(root: string, boards: StormBoard[]): Promise<ServedFiles> {
  const config = loadConfig(undefined, { lab: { enabled: false }, network: { driver: 'none' } });
  const images = new ImageCatalog([{ dir: join(REPO_ROOT, 'images'), sub: 'build' }]);
  const image = await images.get(IMAGE);
  if (!image) throw new Error(`image ${IMAGE} is not built: run bash images/test/build.sh`);
  const byMac = new Map(boards.map((b) => [b.mac, boardRecord(b)]));
  const inventory = { byMac: (mac: string) => byMac.get(mac) } as unknown as Inventory;
  const decider = new InventoryBootDecider({ inventory, images, tftp: { blksize: config.tftp.blksize, windowsize: config.tftp.windowsize } });

  const out: ServedFiles = { files: {}, generated: {}, refBootfile: {} };
  const put = async (path: string, data: Buffer): Promise<void> => {
    const p = join(root, path);
    await mkdir(dirname(p), { recursive: true, mode: 0o755 });
    await writeFile(p, data, { mode: 0o644 });
  };
  for (const b of boards) {
    const spec = await decider.decide(b.mac);
    if (!spec) throw new Error(`${b.id}: the decider would not boot it`);
    if (spec.route !== b.route) throw new Error(`${b.id}: model ${b.model} boots through ${spec.route}, the plan says ${b.route}`);
    for (const path of [spec.kernel, spec.initrd, spec.fdt]) {
      if (!path || out.files[path]) continue;
      const rel = path.slice(`images/${IMAGE}/`.length);
      const src = join(image.dir, rel);
      const data = await readFile(src);
      out.files[path] = expectOf(data);
      await mkdir(dirname(join(root, path)), { recursive: true, mode: 0o755 });
      await copyFile(src, join(root, path));
      await chmod(join(root, path), 0o644);
    }
    if (b.route === 'boot.scr') {
      const img = bootScriptImage(spec, SCRIPT_TIME);
      const path = `boards/${b.id}/boot.scr.uimg`;
      await put(path, img);
      out.generated[b.id] = { kind: 'script', size: img.length, crc: crc32(img.subarray(64)) };
      out.refBootfile[b.id] = path;
    } else {
      const cfg = Buffer.from(renderPxelinux(spec));
      await put(pxelinuxName(b.mac), cfg);
      out.generated[b.id] = { kind: 'pxelinux', ...expectOf(cfg) };
      out.refBootfile[b.id] = 'boot.scr.uimg'; // as ours says; a pxe board loads pxelinux.cfg/ from its directory
    }
  }
  await chmod(root, 0o755);
  return out;
}

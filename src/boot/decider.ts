import type { Image, ImageCatalog } from '../images/catalog.js';
import type { Inventory } from '../inventory/boards.js';
import { modelInfo } from '../inventory/models.js';
import type { Board } from '../store/schema.js';
import { normalizeMac } from '../util/net.js';
import type { BootDecider, BootSpec } from './spec.js';

export interface DeciderOptions {
  inventory: Inventory;
  images: ImageCatalog;
  tftp: { blksize: number; windowsize: number };
  /** What a board boots right now (a lease's image, later); default: the board's own `image`. */
  imageFor?: (board: Board) => string;
  /** Extra kernel arguments for this board and image (a lease's iSCSI root and metadata URL). */
  extraArgs?: (board: Board, image: Image) => string | undefined;
}

/** Boot decisions from the inventory: enrolled boards boot their image; unknown MACs and boards in maintenance are ignored. */
export class InventoryBootDecider implements BootDecider {
  constructor(private readonly o: DeciderOptions) {}

  async decide(mac: string): Promise<BootSpec | null> {
    const board = this.o.inventory.byMac(normalizeMac(mac)); // boards are enrolled with the canonical form
    if (!board || board.state === 'maintenance') return null;
    const imageName = this.o.imageFor?.(board) ?? board.image;
    const image = await this.o.images.get(imageName);
    if (!image) throw new Error(`board ${board.id}: image ${imageName} is not in the catalog`);
    const m = image.manifest;
    if (m.arch !== board.arch) throw new Error(`board ${board.id} is ${board.arch} but image ${imageName} is ${m.arch}`);
    const model = modelInfo(board.model);
    const dtb = model.dtb ? m.dtbs[model.dtb] : undefined;
    if (model.dtb && !dtb) throw new Error(`image ${imageName} has no device tree for model ${board.model} (${model.dtb})`);
    const base = `images/${image.name}`;
    const cmdline = [m.cmdline.replaceAll('{{console}}', model.console), this.o.extraArgs?.(board, image)]
      .filter(Boolean)
      .join(' ');
    return {
      boardId: board.id,
      mac: board.mac,
      ip: board.ip,
      arch: board.arch,
      image: image.name,
      kernel: `${base}/${m.kernel}`,
      initrd: m.initrd ? `${base}/${m.initrd}` : undefined,
      fdt: dtb ? `${base}/${dtb}` : undefined,
      cmdline,
      tftp: { ...this.o.tftp },
    };
  }
}

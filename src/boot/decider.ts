import type { Image, ImageCatalog } from '../images/catalog.js';
import type { Inventory } from '../inventory/boards.js';
import { modelFor } from '../inventory/models.js';
import type { Board } from '../store/schema.js';
import { normalizeMac } from '../util/net.js';
import { fitImage } from './image-fit.js';
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
    const model = modelFor(board);
    if (model.arch !== board.arch) throw new Error(`board ${board.id} is enrolled as ${board.arch} but its model ${model.id} is ${model.arch}`);
    const fit = fitImage(image.name, image.manifest, model);
    if ('error' in fit) throw new Error(`board ${board.id}: ${fit.error}`);
    const base = `images/${image.name}`;
    const cmdline = [image.manifest.cmdline.replaceAll('{{console}}', model.console), model.kernelArgs, board.kernelArgs, this.o.extraArgs?.(board, image)]
      .filter(Boolean)
      .join(' ');
    return {
      boardId: board.id,
      mac: board.mac,
      ip: board.ip,
      arch: board.arch,
      route: model.boot,
      image: image.name,
      kernel: `${base}/${fit.boot.kernel}`,
      initrd: fit.boot.initrd ? `${base}/${fit.boot.initrd}` : undefined,
      fdt: fit.dtb ? `${base}/${fit.dtb}` : undefined,
      loadAddrs: model.loadAddrs,
      cmdline,
      tftp: { ...this.o.tftp },
    };
  }
}

import type { Arch } from '../store/schema.js';

/**
 * A board model as data: everything the boot path must know about a kind of board. The boot decider,
 * the TFTP handler and the renderers read it; none of them names a board.
 */
export interface BoardModel {
  id: string;
  title: string;
  arch: Arch;
  /**
   * How its U-Boot boots from the network: 'boot.scr' (the `dhcp` target sources the DHCP bootfile,
   * boot.scr.uimg) or 'pxe' (the `pxe` target reads pxelinux.cfg/01-<mac>; sunxi boards try it first).
   * A board gets only its route's file: the other is refused, so what it booted through is never a guess.
   */
  boot: 'boot.scr' | 'pxe';
  /** The kernel's serial console, baud rate included: `console=` on the command line. */
  console: string;
  /** The device tree it needs from the image, by the kernel's file name; none: the firmware's own (QEMU `virt`). */
  dtb?: string;
  /** Debian's kernel flavour that runs on it: an image variant of another flavour cannot boot it. */
  kernelFlavour: 'armmp' | 'arm64';
  /**
   * Load addresses for kernel, initrd and device tree, set by the boot script. Absent: U-Boot's own
   * `kernel_addr_r`, `ramdisk_addr_r`, `fdt_addr_r` (every distro-boot build defines them).
   */
  loadAddrs?: { kernel: string; ramdisk: string; fdt: string };
  /** Kernel arguments every boot of this model needs (emulation quirks; real boards: none). */
  kernelArgs?: string;
}

/** The models the server knows. Real boards first; the lab's emulated ones after. */
export const MODELS: Record<string, BoardModel> = {
  bananapi: {
    id: 'bananapi',
    title: 'Banana Pi M1 (Allwinner A20)',
    arch: 'armv7',
    boot: 'pxe',
    console: 'ttyS0,115200',
    dtb: 'sun7i-a20-bananapi.dtb',
    kernelFlavour: 'armmp',
  },
  bananapro: {
    id: 'bananapro',
    title: 'Banana Pro (Allwinner A20)',
    arch: 'armv7',
    boot: 'pxe',
    console: 'ttyS0,115200',
    dtb: 'sun7i-a20-bananapro.dtb',
    kernelFlavour: 'armmp',
  },
  'bananapi-m2u': {
    id: 'bananapi-m2u',
    title: 'Banana Pi M2 Ultra (Allwinner R40)',
    arch: 'armv7',
    boot: 'pxe',
    console: 'ttyS0,115200',
    dtb: 'sun8i-r40-bananapi-m2-ultra.dtb',
    kernelFlavour: 'armmp',
  },
  'qemu-virt-armv7': {
    id: 'qemu-virt-armv7',
    title: 'QEMU virt, Cortex-A15 (the lab)',
    arch: 'armv7',
    boot: 'boot.scr',
    console: 'ttyAMA0,115200',
    kernelFlavour: 'armmp',
  },
  'qemu-virt-arm64': {
    id: 'qemu-virt-arm64',
    title: 'QEMU virt, Cortex-A53 (the lab)',
    arch: 'arm64',
    boot: 'boot.scr',
    console: 'ttyAMA0,115200',
    kernelFlavour: 'arm64',
  },
};

/** Older names still found in stores: the lab's ARMv7 boards were enrolled as `qemu-virt`. */
const ALIASES: Record<string, string> = { 'qemu-virt': 'qemu-virt-armv7' };

/** The model, or null for a name the server does not know. */
export function findModel(id: string): BoardModel | null {
  const key = Object.hasOwn(ALIASES, id) ? ALIASES[id]! : id;
  return Object.hasOwn(MODELS, key) ? MODELS[key]! : null;
}

/**
 * The model a board boots as. An operator's board of a model not listed here boots as a generic board
 * of its arch: the `dhcp` route, ttyS0, the firmware's device tree.
 */
export function modelFor(board: { model: string; arch: Arch }): BoardModel {
  return (
    findModel(board.model) ?? {
      id: board.model,
      title: `${board.model} (not a known model: generic ${board.arch})`,
      arch: board.arch,
      boot: 'boot.scr',
      console: 'ttyS0,115200',
      kernelFlavour: board.arch === 'arm64' ? 'arm64' : 'armmp',
    }
  );
}

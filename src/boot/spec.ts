import type { Arch } from '../store/schema.js';

/** What one board boots: the answer of the BootDecider. Paths are TFTP paths. */
export interface BootSpec {
  boardId: string;
  mac: string;
  ip: string;
  arch: Arch;
  /** What the board's U-Boot asks for (its model's route): boot.scr.uimg, or pxelinux.cfg/01-<mac>. */
  route: 'boot.scr' | 'pxe';
  image: string;
  kernel: string;
  initrd?: string;
  /** Device tree to load; absent → the firmware's own (QEMU passes one; U-Boot's ${fdtcontroladdr}). */
  fdt?: string;
  /** The model's load addresses; absent: U-Boot's kernel_addr_r, ramdisk_addr_r, fdt_addr_r. */
  loadAddrs?: { kernel: string; ramdisk: string; fdt: string };
  cmdline: string;
  tftp: { blksize: number; windowsize: number };
}

/**
 * The one question DHCP and TFTP ask: what does this MAC boot? null = ignore this machine.
 * The MAC may be in either case, with `:`, `-` or no separators (the answer's `mac` is lower case with
 * `:`); a string that is no MAC is an error. Each answer is the caller's own object. Every implementation
 * is in src/boot/deciders.ts and passes test/boot/decider.contract.test.ts.
 */
export interface BootDecider {
  decide(mac: string): Promise<BootSpec | null>;
}

/** The DHCP bootfile every board is given; the TFTP handler answers it per requesting board. */
export const BOOT_SCRIPT_NAME = 'boot.scr.uimg';

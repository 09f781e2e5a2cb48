/**
 * When a board's generated boot files (its boot script, its pxelinux config: they carry the boot's
 * iSCSI secret and metadata token) may be fetched. Open while the board's firmware boots; closed once
 * the board has fetched its kernel; open again when its firmware asks for DHCP again (a power-on, a
 * reset, a `reboot` — U-Boot says who it is in DHCP option 60). The booted OS asking for DHCP does not
 * reopen it, so a tenant root on the booted board, or anyone else, cannot read them again this boot.
 *
 * Closing is per boot: a lease's boot token is made afresh at every power-on, cycle and reimage, and a
 * close recorded under an older token does not count. A board without a lease boots its default image
 * with no secrets; its window never closes. Kept in memory: a controller restart opens every window.
 */
export class BootWindows {
  private readonly closedAt = new Map<string, string>();

  constructor(private readonly currentBoot: (boardId: string) => string | undefined) {}

  /** The board fetched its kernel in the boot named `boot` (read when the fetch ended). */
  close(boardId: string, boot = this.currentBoot(boardId)): void {
    if (boot) this.closedAt.set(boardId, boot);
  }

  /** The board's firmware is booting again. */
  reopen(boardId: string): void {
    this.closedAt.delete(boardId);
  }

  isClosed(boardId: string): boolean {
    const boot = this.currentBoot(boardId);
    return boot !== undefined && this.closedAt.get(boardId) === boot;
  }
}

/** DHCP from boot firmware rather than from a booted OS: U-Boot's vendor class, or a PXE client architecture. */
export function fromFirmware(info: { vendorClass?: string; clientArch?: number } | undefined): boolean {
  return Boolean(info && (/^U-Boot/i.test(info.vendorClass ?? '') || info.clientArch !== undefined));
}

/**
 * A board's boot firmware (U-Boot on SD, eMMC or SPI flash). A tenant is root on the whole board and
 * can rewrite it to capture the next tenant's boot, so every release verifies it and restores it when
 * it differs. Implementations: a firmware file (the lab boards), operator commands (real boards:
 * read back and reflash through the power/console path), none (say so: unverified).
 */
export interface FirmwareCheck {
  ok: boolean;
  /** What was compared, for the board's events ("sha256 1a2b… = expected"). */
  detail: string;
}

export interface FirmwareDriver {
  verify(): Promise<FirmwareCheck>;
  /** Put the known-good firmware back; verify() passes afterwards or this throws. */
  restore(): Promise<void>;
}

import type { Arch } from '../store/schema.js';
import { HttpError } from '../util/errors.js';

/**
 * The name a store keeps an image's root disk under: its name for armv7 (as before images had several
 * arches), `<name>+<arch>` for another arch ('+' is never in an image name). removeImage(name) drops all.
 */
export function storeImageName(image: string, arch: Arch): string {
  return arch === 'armv7' ? image : `${image}+${arch}`;
}

/** Does a store image name belong to this catalog image? */
export function isStoreImageOf(storeName: string | undefined, image: string): boolean {
  return storeName === image || !!storeName?.startsWith(`${image}+`);
}

/** What went wrong, for callers that react differently (the API maps each to an HTTP status). */
export type StorageErrorCode =
  | 'ENOSPC' // the storage filesystem (or a quota) is full
  | 'CORRUPT_IMAGE' // checksum mismatch, bad filesystem, unknown format
  | 'WRONG_ARCH' // image and board (or image and its own binaries) disagree
  | 'IMAGE_IN_USE' // an image with live disks cannot be removed
  | 'NO_ROOT_DISK' // the image has no root disk to clone
  | 'BAD_SIZE' // a disk smaller than its image, or a blank disk of no whole sectors
  | 'EXPORT_FAILED' // tgtd refused a target
  | 'DISK_MISSING'; // a disk a lease holds is gone from the store (never re-made blank)

const STATUS: Record<StorageErrorCode, number> = {
  ENOSPC: 507,
  CORRUPT_IMAGE: 422,
  WRONG_ARCH: 400,
  IMAGE_IN_USE: 409,
  NO_ROOT_DISK: 400,
  BAD_SIZE: 400,
  EXPORT_FAILED: 502,
  DISK_MISSING: 409,
};

/** A storage failure with a code and an HTTP status; the underlying tool error stays as `cause`. */
export class StorageError extends HttpError {
  constructor(
    readonly code: StorageErrorCode,
    message: string,
    options?: { cause?: unknown; details?: unknown },
  ) {
    super(STATUS[code], message, options);
  }
}

/** The root disk of an image, as a store imports it: once per image content, then cloned per lease. */
export interface ImageDisk {
  /** Image name (catalog name). */
  image: string;
  /** The disk file as the image ships it (outside the store). */
  path: string;
  /** Expected SHA-256 from the manifest; checked once, when the store imports the disk. */
  sha256?: string;
  /** The image's architecture, checked against the binaries inside an ext2/3/4 root disk. */
  arch?: string;
}

export interface DiskInfo {
  id: string;
  /** The disk file (what tgtd exports). */
  path: string;
  /** Logical size (what the board sees). */
  sizeBytes: number;
  /** Space the disk itself holds: btrfs exclusive bytes, else allocated blocks. */
  usedBytes?: number;
  /** Image the disk was cloned from (undefined for a blank disk, or when its metadata is gone). */
  image?: string;
  createdAt?: string;
}

export interface CloneOptions {
  /** Make the disk this large (≥ the image's size); ext2/3/4 root filesystems are grown to match. */
  sizeBytes?: number;
  /** Copy progress (the copy store reports while copying; CoW stores report once, done). */
  onProgress?: (doneBytes: number, totalBytes: number) => void;
}

export const DISK_STORE_KINDS = ['btrfs', 'reflink', 'copy'] as const;
export type DiskStoreKind = (typeof DISK_STORE_KINDS)[number];

/**
 * Per-lease disks: clones of image root disks, and blank disks. A disk is all or nothing: it is built
 * under a temporary name and renamed into place, and a failure removes what was made. Destroy, and
 * clone or createBlank of an existing id, are idempotent.
 */
export interface DiskStore {
  readonly kind: DiskStoreKind;
  readonly dir: string;
  /** The file a disk lives in (whether or not it exists yet). */
  diskPath(diskId: string): string;
  /** Clone the image's disk as `diskId`; an existing disk of that id is returned as is. */
  clone(src: ImageDisk, diskId: string, opts?: CloneOptions): Promise<DiskInfo>;
  /**
   * A new sparse, zero-filled disk of `sizeBytes` (a whole number of 512-byte sectors) as `diskId`, with
   * no image; an existing disk of that id (whatever its size) is returned as is.
   */
  createBlank(diskId: string, sizeBytes: number): Promise<DiskInfo>;
  /** Remove the disk; false when there was none. */
  destroy(diskId: string): Promise<boolean>;
  list(): Promise<DiskInfo[]>;
  /** The disk's sizes, or null when it does not exist. */
  size(diskId: string): Promise<DiskInfo | null>;
  /** Names of images whose disks the store has imported. */
  importedImages(): Promise<string[]>;
  /** Drop the store's imported copies of an image; refused (IMAGE_IN_USE) while disks of it exist. */
  removeImage(image: string): Promise<void>;
  /** Remove leftovers of interrupted clones and destroys, and imports no disk uses; returns what went. */
  sweep(): Promise<string[]>;
  /** Move a disk aside (reconcile's answer to a disk no lease owns); its quarantine name, or null if none. */
  quarantine(diskId: string): Promise<string | null>;
  listQuarantine(): Promise<QuarantinedDisk[]>;
  /** The admin's explicit removal of a quarantined disk; false when there was none. */
  removeQuarantined(name: string): Promise<boolean>;
  /** Remove quarantined disks older than maxAgeMs; returns what went. */
  sweepQuarantine(maxAgeMs: number, now?: number): Promise<string[]>;
}

export interface QuarantinedDisk {
  /** `<diskId>@<time>`: the handle the admin removes it by. */
  name: string;
  diskId: string;
  image?: string;
  createdAt?: string;
  quarantinedAt: string;
  sizeBytes: number;
}

/** Disk ids become file names and tgtd backing-store paths: keep them tame. */
const DISK_ID_RE = /^[a-z0-9][a-z0-9_-]{0,63}$/;
export function assertDiskId(id: string): void {
  if (!DISK_ID_RE.test(id)) throw new Error(`invalid disk id ${JSON.stringify(id)}: lower-case letters, digits, '-' and '_' (at most 64)`);
}

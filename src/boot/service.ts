import type { Config } from '../config.js';
import type { Image, ImageCatalog } from '../images/catalog.js';
import type { Inventory } from '../inventory/boards.js';
import type { BoardEvents } from '../inventory/events.js';
import { metadataKernelArgs } from '../leases/metadata.js';
import type { BoardStorage } from '../leases/ports.js';
import { log } from '../log.js';
import type { Board, Lease } from '../store/schema.js';
import { BootWindows, fromFirmware } from './boot-window.js';
import { bootDecider } from './deciders.js';
import type { DhcpEvent, DhcpRequestInfo, DhcpReservation } from './dhcp/server.js';
import { bootFilesResolver } from './files.js';
import { FileCache } from './tftp/file-cache.js';
import { resolverHandler, type TftpResolver } from './tftp/resolved.js';
import { BOOT_SCRIPT_NAME, type BootDecider } from './spec.js';
import type { TftpHandler, TransferEvent } from './tftp/server.js';

export interface BootServiceDeps {
  config: Pick<Config, 'bootIp' | 'tftp' | 'metadata'>;
  inventory: Inventory;
  images: ImageCatalog;
  events: BoardEvents;
  /** The lease that holds a board now (LeaseService.leaseOnBoard): what the board boots, with which secrets. */
  leaseOnBoard: (boardId: string) => Lease | undefined;
  /** iSCSI root disks, when storage is on. */
  storage?: Pick<BoardStorage, 'kernelArgs'>;
}

/**
 * What the boot servers ask, answered from the inventory and the leases: whether DHCP answers a MAC and
 * with what, which files TFTP serves a board, what its kernel command line says; and what their
 * traffic means, recorded as board events (which lease jobs wait for).
 */
export class BootService {
  readonly decider: BootDecider;
  /** The TFTP namespace the boards see (src/boot/files.ts), resolved as data for the TFTP thread. */
  readonly resolveFile: TftpResolver;
  /** The same, served on this thread. */
  readonly files: TftpHandler;
  private readonly windows: BootWindows;
  private readonly metadataBase: string;

  constructor(private readonly d: BootServiceDeps) {
    this.metadataBase = `http://${d.config.bootIp}:${d.config.metadata.port}`;
    this.decider = bootDecider('inventory', {
      inventory: d.inventory,
      images: d.images,
      tftp: d.config.tftp,
      imageFor: (board) => d.leaseOnBoard(board.id)?.image ?? board.image,
      extraArgs: (board, image) => this.kernelArgs(board, image),
    });
    // A board's generated boot files close once it has its kernel, until its next power-on (a new boot token).
    this.windows = new BootWindows((boardId) => d.leaseOnBoard(boardId)?.bootToken);
    this.resolveFile = bootFilesResolver({ inventory: d.inventory, images: d.images, decider: this.decider, closed: (id) => this.windows.isClosed(id) });
    // Served on this thread only with `tftp.thread: false`; the TFTP thread keeps its own cache.
    const cacheBytes = d.config.tftp.thread ? 0 : d.config.tftp.fileCacheMb * 2 ** 20;
    this.files = resolverHandler(this.resolveFile, cacheBytes ? new FileCache({ maxBytes: cacheBytes }) : undefined);
  }

  /** A leased board boots with its iSCSI root (when its image has a root disk) and its metadata URLs. */
  kernelArgs(board: Board, image: Image): string | undefined {
    const lease = this.d.leaseOnBoard(board.id);
    if (!lease) return undefined;
    const iscsi = lease.iscsi && this.d.storage ? this.d.storage.kernelArgs(lease.iscsi, image) : undefined;
    // No token yet (a lease recorded before tokens existed): the metadata service refuses it until the next boot.
    return [iscsi, metadataKernelArgs(this.metadataBase, lease.id, lease.bootToken ?? 'none')].filter(Boolean).join(' ');
  }

  /** DHCP reservations: an enrolled board that may boot now gets its address and boot script; an unknown MAC is noted. */
  readonly lookup = async (info: DhcpRequestInfo): Promise<DhcpReservation | null> => {
    const board = this.d.inventory.byMac(info.mac);
    if (!board) {
      // Recorded in batches, never awaited: a flood of unknown MACs must not queue real boards behind the disk.
      this.d.inventory.noteUnknown(info.mac, { vendorClass: info.vendorClass, clientArch: info.clientArch }).catch((err) => log.warn({ err }, 'recording an unknown MAC failed'));
      return null;
    }
    if (!(await this.decider.decide(board.mac))) return null;
    return { ip: board.ip, hostname: board.id, bootFile: BOOT_SCRIPT_NAME, nextServer: this.d.config.bootIp };
  };

  /** DHCP traffic as board events; firmware asking again (a new boot) reopens the board's boot files. */
  readonly onDhcpEvent = (ev: DhcpEvent): void => {
    const board = ev.mac ? this.d.inventory.byMac(ev.mac) : undefined;
    if (board && ev.type === 'offer' && fromFirmware(ev.info)) this.windows.reopen(board.id);
    if (board && ev.type !== 'unknown') {
      this.d.events.add(board.id, { type: 'dhcp', message: `DHCP ${ev.type}${ev.ip ? ` ${ev.ip}` : ''}${ev.reason ? `: ${ev.reason}` : ''}`, details: { kind: ev.type, ip: ev.ip } });
    }
  };

  /** TFTP transfers as board events; a leased board's kernel fetched closes its boot files. */
  readonly onTransfer = (ev: TransferEvent): void => {
    const board = this.d.inventory.byIp(ev.client.address);
    if (!board) return;
    if (ev.ok) void this.closeOnKernel(board.id, ev.path).catch((err) => log.warn({ err, board: board.id }, 'closing the boot window'));
    const mbps = ev.ms > 0 ? +(ev.bytes / 1e6 / (ev.ms / 1000)).toFixed(2) : undefined;
    this.d.events.add(board.id, {
      type: ev.ok ? 'tftp' : 'error',
      message: ev.ok ? `fetched ${ev.path} (${ev.bytes} bytes in ${ev.ms} ms)` : `TFTP ${ev.path} failed: ${ev.error}`,
      details: { path: ev.path, bytes: ev.bytes, ms: ev.ms, mbps, blksize: ev.blksize, windowsize: ev.windowsize },
    });
  };

  private async closeOnKernel(boardId: string, path: string): Promise<void> {
    const lease = this.d.leaseOnBoard(boardId);
    const boot = lease?.bootToken; // the boot this fetch belonged to, read before anything awaits
    const img = lease && (await this.d.images.get(lease.image));
    const arch = this.d.inventory.find(boardId)?.arch;
    const kernel = img && arch && img.manifest.arches[arch]?.kernel;
    if (img && kernel && path.replace(/^\/+/, '') === `images/${img.name}/${kernel}`) this.windows.close(boardId, boot);
  }
}

import type { ImageCatalog } from '../images/catalog.js';
import type { Inventory } from '../inventory/boards.js';
import { resolverHandler, type Resolved, type TftpResolver } from './tftp/resolved.js';
import { TftpError, type TftpHandler } from './tftp/server.js';
import { bootScriptImage, pxelinuxName, renderPxelinux } from './render.js';
import { BOOT_SCRIPT_NAME, type BootDecider, type BootSpec } from './spec.js';

export interface BootFilesOptions {
  inventory: Inventory;
  images: ImageCatalog;
  decider: BootDecider;
  /** True once the board's generated files are closed for this boot (src/boot/boot-window.ts). */
  closed?: (boardId: string) => boolean;
}

const ACCESS = 2;

/**
 * The TFTP namespace the boards see:
 *   boot.scr.uimg                 the asking board's own boot script
 *   boards/<id>/boot.scr.uimg     a board's boot script by name — only to that board's reserved IP
 *   pxelinux.cfg/01-<mac>         a board's pxelinux config — only to that board's reserved IP
 *   images/<name>/<file>          an image's boot files (kernel, initrd, device trees), to any enrolled board
 * A board gets the generated file its model boots through (BoardModel.boot); the other is refused.
 * Generated files carry the boot's secrets, so they go to the board's own IP and nowhere else, and only
 * until it has fetched its kernel (`closed`).
 * Resolved as data (src/boot/tftp/resolved.ts), so the decision stays here and the serving can run on
 * the TFTP thread.
 */
export function bootFilesResolver(o: BootFilesOptions): TftpResolver {
  return async (rawPath, client) => {
    const path = rawPath.replace(/^\/+/, '');
    const board = o.inventory.byIp(client.address);
    if (!board) throw new TftpError(ACCESS, `${client.address} is not an enrolled board`);

    // The board's own generated file, when it is the one its model boots through.
    const own = async (forMac: string, route: BootSpec['route'], render: (spec: BootSpec) => Buffer) => {
      if (forMac !== board.mac) throw new TftpError(ACCESS, `not ${board.id}'s file`);
      if (o.closed?.(board.id)) throw new TftpError(ACCESS, `${board.id} has fetched its kernel: its boot files open again when it boots again`);
      const spec = await o.decider.decide(board.mac);
      if (!spec) return null;
      if (spec.route !== route) {
        const other = spec.route === 'pxe' ? pxelinuxName(board.mac) : BOOT_SCRIPT_NAME;
        throw new TftpError(ACCESS, `${board.id} (model ${board.model}) boots through ${other}`);
      }
      return { bytes: render(spec) } satisfies Resolved;
    };

    if (path === BOOT_SCRIPT_NAME) return own(board.mac, 'boot.scr', (s) => bootScriptImage(s));
    const byName = /^boards\/([^/]+)\/boot\.scr\.uimg$/.exec(path);
    if (byName) {
      const target = o.inventory.find(byName[1]!);
      if (!target) return null;
      return own(target.mac, 'boot.scr', (s) => bootScriptImage(s));
    }
    if (path.startsWith('pxelinux.cfg/')) {
      const m = /^pxelinux\.cfg\/01-((?:[0-9a-f]{2}-){5}[0-9a-f]{2})$/.exec(path.toLowerCase());
      const target = m ? o.inventory.byMac(m[1]!.replaceAll('-', ':')) : undefined;
      if (!target) return null; // the IP-hex and default-* fallbacks: we always answer 01-<mac> first
      return own(target.mac, 'pxe', (s) => Buffer.from(renderPxelinux(s)));
    }
    const img = /^images\/([^/]+)\/(.+)$/.exec(path);
    if (img) {
      const image = await o.images.get(img[1]!);
      if (!image) return null;
      // Only what U-Boot loads, of every arch: not the root disks, not the manifest.
      const bootFiles = new Set(Object.values(image.manifest.arches).flatMap((a) => [a.kernel, a.initrd, ...Object.values(a.dtbs)]).filter(Boolean));
      if (!bootFiles.has(img[2]!)) return null;
      return { file: { root: image.dir, name: img[2]! } } satisfies Resolved;
    }
    return null;
  };
}

/** The same namespace served on this thread. */
export const bootFilesHandler = (o: BootFilesOptions): TftpHandler => resolverHandler(bootFilesResolver(o));

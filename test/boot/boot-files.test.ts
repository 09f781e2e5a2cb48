import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InventoryBootDecider } from '../../src/boot/decider.js';
import { BootWindows, fromFirmware } from '../../src/boot/boot-window.js';
import { bootFilesHandler } from '../../src/boot/files.js';
import { TftpServer } from '../../src/boot/tftp/server.js';
import { decodeScriptImage } from '../../src/boot/uimage.js';
import { ImageCatalog } from '../../src/images/catalog.js';
import { Inventory } from '../../src/inventory/boards.js';
import { Store } from '../../src/store/store.js';
import { makeImageRoot } from '../helpers/fixtures.js';
import { requireTools } from '../helpers/tools.js';

// The boards' TFTP namespace, fetched with curl from each board's own source address (loopback
// aliases 127.0.0.x stand in for the boards' reserved IPs).
let tftp: TftpServer;
let store: Store;
/** The current boot of each board (the server uses the lease's boot token). */
const boots = new Map<string, string>();
const windows = new BootWindows((id) => boots.get(id));
let root: string;
const out = mkdtempSync(join(tmpdir(), 'bootfiles-'));

beforeAll(async () => {
  requireTools('curl');
  root = makeImageRoot();
  store = await Store.open(join(mkdtempSync(join(tmpdir(), 'bf-')), 'state.json'));
  const images = new ImageCatalog([{ dir: root, sub: 'build' }]);
  const inventory = new Inventory({ store, images, subnet: '127.0.0.0/8', bootIp: '127.0.0.1' });
  const power = { driver: 'command', on: 'true', off: 'true' };
  await inventory.create({ id: 'a', mac: '02:00:00:00:0a:01', model: 'bananapi', arch: 'armv7', ip: '127.0.0.2', power, image: 'test' });
  await inventory.create({ id: 'b', mac: '02:00:00:00:0b:01', model: 'qemu-virt', arch: 'armv7', ip: '127.0.0.3', power, image: 'test' });
  const decider = new InventoryBootDecider({ inventory, images, tftp: { blksize: 1468, windowsize: 8 } });
  tftp = new TftpServer({ address: '127.0.0.1', port: 0, handler: bootFilesHandler({ inventory, images, decider, closed: (id) => windows.isClosed(id) }) });
  await tftp.start();
});
afterAll(async () => {
  await tftp.stop();
  await store.close();
});

let n = 0;
/** curl's exit codes: 68 = TFTP file not found, 69 = TFTP permission problem (an ERROR 2). */
function fetchAs(ip: string, path: string): Promise<{ ok: boolean; code: number; file: string; err: string }> {
  const file = join(out, `f${n++}`);
  return new Promise((resolve) =>
    execFile('curl', ['-sS', '--interface', ip, '-o', file, `tftp://127.0.0.1:${tftp.address().port}/${path}`], { timeout: 20_000 }, (err, _o, stderr) =>
      resolve({ ok: !err, code: err ? Number((err as { code?: number }).code) : 0, file, err: stderr }),
    ),
  );
}

describe('what each board may fetch over TFTP', () => {
  it('a board gets the boot file of its model’s route, rendered for its model; the other route is refused', async () => {
    // bananapi: U-Boot's pxe target (sunxi boards try it before dhcp): pxelinux with the A20 device tree.
    const a = await fetchAs('127.0.0.2', 'pxelinux.cfg/01-02-00-00-00-0a-01');
    expect(a.ok).toBe(true);
    const cfg = readFileSync(a.file, 'utf8');
    expect(cfg).toContain('menu label test on a');
    expect(cfg).toContain('append console=ttyS0,115200 quiet');
    expect(cfg).toContain('fdt images/test/dtbs/sun7i-a20-bananapi.dtb');
    const noScript = await fetchAs('127.0.0.2', 'boot.scr.uimg');
    expect(noScript.code).toBe(69); // refused (ERROR 2): U-Boot's dhcp autoload fails and its pxe target asks the pxelinux file
    expect(existsSync(noScript.file) && readFileSync(noScript.file).length > 0).toBe(false);
    // qemu-virt: the dhcp target's boot script, the firmware's device tree; its pxelinux file is refused.
    const b = await fetchAs('127.0.0.3', 'boot.scr.uimg');
    expect(b.ok).toBe(true);
    const script = decodeScriptImage(readFileSync(b.file)).script;
    expect(script).toContain('dozen: board b (02:00:00:00:0b:01) boots image test');
    expect(script).toContain('console=ttyAMA0,115200');
    expect(script).toContain('setenv dozen_fdt ${fdtcontroladdr}');
    expect(script).not.toContain('kernel_addr_r 0x'); // no load addresses of its own: U-Boot's
    expect((await fetchAs('127.0.0.3', 'pxelinux.cfg/01-02-00-00-00-0b-01')).code).toBe(69);
  });

  it('another board’s script or pxelinux file is refused; its own are served', async () => {
    expect((await fetchAs('127.0.0.3', 'boards/b/boot.scr.uimg')).ok).toBe(true);
    const other = await fetchAs('127.0.0.2', 'boards/b/boot.scr.uimg');
    expect(other.ok).toBe(false);
    expect(other.code).toBe(69);
    expect(existsSync(other.file) && readFileSync(other.file).length > 0).toBe(false);
    expect((await fetchAs('127.0.0.3', 'boards/a/boot.scr.uimg')).code).toBe(69);
    expect((await fetchAs('127.0.0.3', 'pxelinux.cfg/01-02-00-00-00-0a-01')).code).toBe(69);
    const own = await fetchAs('127.0.0.2', 'pxelinux.cfg/01-02-00-00-00-0a-01');
    expect(readFileSync(own.file, 'utf8')).toMatch(/kernel images\/test\/vmlinuz/);
  });

  it('an address that is no enrolled board gets nothing', async () => {
    expect((await fetchAs('127.0.0.9', 'boot.scr.uimg')).code).toBe(69);
    expect((await fetchAs('127.0.0.9', 'images/test/vmlinuz')).code).toBe(69);
  });

  it('image boot files go to any enrolled board, byte-identical; nothing else of the image', async () => {
    const k = await fetchAs('127.0.0.3', 'images/test/vmlinuz');
    expect(readFileSync(k.file)).toEqual(readFileSync(join(root, 'test/build/vmlinuz')));
    expect((await fetchAs('127.0.0.3', 'images/test/manifest.json')).code).toBe(68);
    expect((await fetchAs('127.0.0.3', 'images/test/../test/build/vmlinuz')).ok).toBe(false);
  });
});

describe('a boot window', () => {
  it('closes a board’s generated files once it has its kernel, keeps image files, and reopens at its next boot', async () => {
    const aCfg = 'pxelinux.cfg/01-02-00-00-00-0a-01';
    boots.set('a', 'boot-1');
    expect((await fetchAs('127.0.0.2', aCfg)).ok).toBe(true); // U-Boot may ask again within a boot
    windows.close('a'); // the server does this when a's kernel transfer completes
    for (const path of ['boot.scr.uimg', 'boards/a/boot.scr.uimg', aCfg]) {
      const r = await fetchAs('127.0.0.2', path);
      expect([path, r.code]).toEqual([path, 69]);
      expect(existsSync(r.file) && readFileSync(r.file).length > 0).toBe(false);
    }
    expect((await fetchAs('127.0.0.2', 'images/test/vmlinuz')).ok).toBe(true);
    // Another board is not affected; a board without a boot token (no lease, no secrets) never closes.
    expect((await fetchAs('127.0.0.3', 'boot.scr.uimg')).ok).toBe(true);
    windows.close('b');
    expect((await fetchAs('127.0.0.3', 'boot.scr.uimg')).ok).toBe(true);
    // The next power-on makes a new boot token: open again.
    boots.set('a', 'boot-2');
    expect((await fetchAs('127.0.0.2', aCfg)).ok).toBe(true);
    // A reset without the API (same token): open again when the firmware asks for DHCP, not the booted OS.
    windows.close('a');
    expect((await fetchAs('127.0.0.2', aCfg)).code).toBe(69);
    expect([fromFirmware({ vendorClass: 'Linux ipconfig' }), fromFirmware({ vendorClass: 'udhcp 1.35.0' }), fromFirmware({})]).toEqual([false, false, false]);
    expect([fromFirmware({ vendorClass: 'U-Boot.armv7' }), fromFirmware({ clientArch: 21 })]).toEqual([true, true]);
    windows.reopen('a');
    expect((await fetchAs('127.0.0.2', aCfg)).ok).toBe(true);
    boots.clear();
  });
});

import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DeciderOptions } from '../../src/boot/decider.js';
import { BOOT_DECIDERS, bootDecider } from '../../src/boot/deciders.js';
import { renderBootScript, renderPxelinux } from '../../src/boot/render.js';
import type { BootDecider, BootSpec } from '../../src/boot/spec.js';
import { ImageCatalog } from '../../src/images/catalog.js';
import { Inventory } from '../../src/inventory/boards.js';
import type { Board } from '../../src/store/schema.js';
import { Store } from '../../src/store/store.js';
import { makeImageRoot } from '../helpers/fixtures.js';

// One contract, run against every boot decider in the registry: unknown MACs are ignored, any spelling of
// a known MAC gets the same answer, and that answer is a spec the boot files can be rendered from.
// Then what the inventory decider adds: maintenance, lease images and kernel arguments, clear errors.
const dirs: string[] = [];
const cleanups: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const c of cleanups) await c().catch(() => {});
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const TFTP = { blksize: 1468, windowsize: 8 };
const power = { driver: 'command', on: 'true', off: 'true' };

/** An image in the built-image layout (<root>/<name>/build/manifest.json); the decider reads only the manifest. */
function addImage(root: string, manifest: Record<string, unknown>): void {
  const dir = join(root, String(manifest.name), 'build');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'manifest.json'), JSON.stringify(manifest));
}

/**
 * Real inventory and catalog in temp dirs. Images: `test` (armv7: kernel, initrd, the bananapi device
 * tree; console={{console}} quiet), `slim` (armv7: kernel only), `wide` (arm64).
 * Boards (all available): bpi (bananapi, test), virt (qemu-virt, slim).
 */
async function inventoryFixture(): Promise<{ inventory: Inventory; images: ImageCatalog }> {
  const root = makeImageRoot('test', 'armv7');
  dirs.push(root);
  addImage(root, { name: 'slim', arch: 'armv7', kernel: 'zImage', cmdline: 'console={{console}} root=/dev/vda earlycon={{console}}' });
  addImage(root, { name: 'wide', arch: 'arm64', kernel: 'Image', initrd: 'initrd.img', cmdline: 'console={{console}}' });
  // Both arches in one image (the built-in images' form), each with its own kernel flavour.
  addImage(root, {
    name: 'multi',
    cmdline: 'console={{console}}',
    arches: {
      armv7: { kernel: 'vmlinuz', initrd: 'initrd.img', flavour: 'armmp', dtbs: { 'sun8i-r40-bananapi-m2-ultra.dtb': 'dtbs/r40.dtb' } },
      arm64: { kernel: 'arm64/Image', initrd: 'arm64/initrd.img', flavour: 'arm64' },
    },
  });
  addImage(root, { name: 'odd', cmdline: 'console={{console}}', arches: { armv7: { kernel: 'vmlinuz', flavour: 'rpi' } } });
  const stateDir = mkdtempSync(join(tmpdir(), 'decider-'));
  dirs.push(stateDir);
  const store = await Store.open(join(stateDir, 'state.json'));
  cleanups.push(() => store.close());
  const images = new ImageCatalog([{ dir: root, sub: 'build' }]);
  const inventory = new Inventory({ store, images, subnet: '10.177.0.0/24', bootIp: '10.177.0.1' });
  await inventory.create({ id: 'bpi', mac: '02:00:00:00:0a:01', model: 'bananapi', arch: 'armv7', ip: '10.177.0.11', power, image: 'test' });
  await inventory.create({ id: 'virt', mac: '02:00:00:00:0b:02', model: 'qemu-virt', arch: 'armv7', ip: '10.177.0.12', power, image: 'slim' });
  return { inventory, images };
}

interface Harness {
  decider: BootDecider;
  /** Boards this decider boots, by canonical MAC, with the exact spec each must get. */
  known: Array<{ mac: string; spec: BootSpec }>;
}

const harnesses: Record<string, () => Promise<Harness>> = {
  async inventory() {
    const { inventory, images } = await inventoryFixture();
    return {
      decider: bootDecider('inventory', { inventory, images, tftp: TFTP }),
      known: [
        {
          mac: '02:00:00:00:0a:01',
          spec: {
            boardId: 'bpi',
            mac: '02:00:00:00:0a:01',
            ip: '10.177.0.11',
            arch: 'armv7',
            route: 'pxe',
            image: 'test',
            kernel: 'images/test/vmlinuz',
            initrd: 'images/test/initrd.img',
            fdt: 'images/test/dtbs/sun7i-a20-bananapi.dtb',
            cmdline: 'console=ttyS0,115200 quiet',
            tftp: TFTP,
          },
        },
        {
          mac: '02:00:00:00:0b:02',
          spec: {
            boardId: 'virt',
            mac: '02:00:00:00:0b:02',
            ip: '10.177.0.12',
            arch: 'armv7',
            route: 'boot.scr',
            image: 'slim',
            kernel: 'images/slim/zImage',
            cmdline: 'console=ttyAMA0,115200 root=/dev/vda earlycon=ttyAMA0,115200',
            tftp: TFTP,
          },
        },
      ],
    };
  },
};

/** The spellings of one MAC a caller may use. */
const spellings = (mac: string) => [mac.toUpperCase(), mac.replaceAll(':', '-'), mac.toUpperCase().replaceAll(':', '-'), mac.replaceAll(':', '')];

describe('boot decider registry', () => {
  it('every decider in the registry runs the contract below', () => {
    expect(Object.keys(harnesses).sort()).toEqual(Object.keys(BOOT_DECIDERS).sort());
  });

  it('an unknown name fails with the known ones; a name is looked up as given', () => {
    const o = {} as DeciderOptions; // never reaches a factory
    expect(() => bootDecider('pixiecore', o)).toThrow(/unknown boot decider "pixiecore" \(known: inventory\)/);
    expect(() => bootDecider('Inventory', o)).toThrow(/unknown boot decider "Inventory"/);
    expect(() => bootDecider('constructor', o)).toThrow(/unknown boot decider "constructor"/);
  });
});

for (const [name, make] of Object.entries(harnesses)) {
  describe(`boot decider contract: ${name}`, () => {
    let h: Harness;
    beforeAll(async () => {
      h = await make();
      expect(h.known.length).toBeGreaterThanOrEqual(2); // answers are told apart, not one spec for everyone
    });

    it('an unknown MAC is ignored (null), in any spelling', async () => {
      for (const mac of ['02:00:00:00:ff:ff', ...spellings('02:00:00:00:0a:ff'), 'ff:ff:ff:ff:ff:ff']) {
        expect([mac, await h.decider.decide(mac)]).toEqual([mac, null]);
      }
    });

    it('a string that is no MAC is an error naming it, not an answer', async () => {
      for (const bad of ['', 'not-a-mac', '02:00:00:00:0a', '02:00:00:00:0a:01:02', '02:00:00-00:0a:01', 'g2:00:00:00:0a:01']) {
        await expect(h.decider.decide(bad), bad).rejects.toThrow(`not a MAC address: ${bad}`);
      }
    });

    it('a known board gets its own spec, in any spelling of its MAC', async () => {
      for (const { mac, spec } of h.known) {
        expect(await h.decider.decide(mac)).toEqual(spec);
        for (const m of spellings(mac)) expect([m, await h.decider.decide(m)]).toEqual([m, spec]);
      }
    });

    it('a spec is consistent: canonical MAC, image paths the TFTP namespace serves, renderable boot files', async () => {
      for (const { mac } of h.known) {
        const spec = (await h.decider.decide(mac.toUpperCase()))!;
        expect(spec.mac).toBe(mac);
        expect(spec.mac).toMatch(/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
        expect(spec.ip).toMatch(/^\d{1,3}(\.\d{1,3}){3}$/);
        expect(['armv7', 'arm64']).toContain(spec.arch);
        // src/boot/files.ts serves images/<name>/<boot file>: nothing else reaches a board.
        for (const path of [spec.kernel, spec.initrd, spec.fdt].filter((p) => p !== undefined)) {
          expect(path.startsWith(`images/${spec.image}/`), path).toBe(true);
          expect(path.split('/').includes('..') || /\s/.test(path), path).toBe(false);
        }
        expect(spec.cmdline).not.toMatch(/\{\{|\}\}|^\s|\s$|\n/); // placeholders filled, one line, trimmed
        expect(spec.tftp.blksize).toBeGreaterThanOrEqual(8);
        expect(spec.tftp.windowsize).toBeGreaterThanOrEqual(1);
        // What DHCP and TFTP do with it: render the board's script and pxelinux file (unsafe values throw).
        const script = renderBootScript(spec);
        expect(script).toContain(`dozen: board ${spec.boardId} (${spec.mac}) boots image ${spec.image}`);
        expect(script).toContain(`tftpboot \${kernel_addr_r} ${spec.kernel} || reset`);
        expect(script).toContain(`setenv bootargs "${spec.cmdline}"`);
        expect(renderPxelinux(spec)).toContain(`append ${spec.cmdline}`);
      }
      const boards = await Promise.all(h.known.map((k) => h.decider.decide(k.mac)));
      expect(new Set(boards.map((s) => s!.boardId)).size).toBe(h.known.length);
      expect(new Set(boards.map((s) => s!.ip)).size).toBe(h.known.length);
    });

    it('each answer is the caller’s own: changing one changes no later answer', async () => {
      const { mac, spec } = h.known[0]!;
      const expected = structuredClone(spec); // the harness's own objects may be what the decider was given
      const first = (await h.decider.decide(mac))!;
      first.tftp.blksize = 512;
      first.cmdline += ' init=/bin/sh';
      first.kernel = 'images/evil/vmlinuz';
      expect(await h.decider.decide(mac)).toEqual(expected);
    });
  });
}

describe('inventory boot decider', () => {
  let inventory: Inventory;
  let images: ImageCatalog;
  beforeAll(async () => {
    ({ inventory, images } = await inventoryFixture());
  });
  const decider = (o: Partial<DeciderOptions> = {}) => bootDecider('inventory', { inventory, images, tftp: TFTP, ...o });

  it('a board in maintenance is ignored until it is back', async () => {
    const d = decider();
    await inventory.transition('bpi', 'maintenance', 'reseating its SD card');
    expect(await d.decide('02:00:00:00:0a:01')).toBeNull();
    expect((await d.decide('02:00:00:00:0b:02'))?.boardId).toBe('virt'); // only that board
    await inventory.transition('bpi', 'available', 'back');
    expect((await d.decide('02:00:00:00:0a:01'))?.boardId).toBe('bpi');
  });

  it('what a board boots comes from imageFor (a lease’s image), and the spec follows that image', async () => {
    const asked: string[] = [];
    const d = decider({
      imageFor: (b) => {
        asked.push(b.id);
        return b.id === 'virt' ? 'test' : b.image;
      },
    });
    expect(await d.decide('02:00:00:00:0b:02')).toEqual({
      boardId: 'virt',
      mac: '02:00:00:00:0b:02',
      ip: '10.177.0.12',
      arch: 'armv7',
      route: 'boot.scr',
      image: 'test',
      kernel: 'images/test/vmlinuz',
      initrd: 'images/test/initrd.img',
      fdt: undefined, // qemu-virt: the firmware's device tree, even though the image carries one
      cmdline: 'console=ttyAMA0,115200 quiet',
      tftp: TFTP,
    });
    expect((await d.decide('02:00:00:00:0a:01'))?.image).toBe('test');
    expect(asked).toEqual(['virt', 'bpi']);
  });

  it('extraArgs (a lease’s iSCSI root and metadata URL) follow the image’s command line, for the image being booted', async () => {
    const seen: Array<[string, string]> = [];
    const d = decider({
      imageFor: (b) => (b.id === 'virt' ? 'test' : b.image),
      extraArgs: (b: Board, image) => {
        seen.push([b.id, image.name]);
        if (b.id === 'bpi') return 'iscsi_target_ip=10.177.0.1 ds=nocloud-net;s=http://10.177.0.1:8775/m/l1/';
        return b.id === 'virt' ? '' : undefined;
      },
    });
    expect((await d.decide('02:00:00:00:0a:01'))?.cmdline).toBe('console=ttyS0,115200 quiet iscsi_target_ip=10.177.0.1 ds=nocloud-net;s=http://10.177.0.1:8775/m/l1/');
    expect((await d.decide('02:00:00:00:0b:02'))?.cmdline).toBe('console=ttyAMA0,115200 quiet'); // '' adds nothing, not a trailing space
    expect(seen).toEqual([
      ['bpi', 'test'],
      ['virt', 'test'],
    ]);
    expect(await d.decide('02:00:00:00:ff:ff')).toBeNull(); // an unknown MAC asks nobody
    expect(seen).toHaveLength(2);
  });

  it('the TFTP tuning is the configured one', async () => {
    expect((await decider({ tftp: { blksize: 1024, windowsize: 64 } }).decide('02:00:00:00:0a:01'))?.tftp).toEqual({ blksize: 1024, windowsize: 64 });
  });

  it('a board that cannot boot its image is an error that says why, not a silent null', async () => {
    await inventory.create({ id: 'big', mac: '02:00:00:00:0c:03', model: 'qemu-virt-arm64', arch: 'arm64', ip: '10.177.0.13', power, image: 'wide' });
    await inventory.create({ id: 'pro', mac: '02:00:00:00:0d:04', model: 'bananapro', arch: 'armv7', ip: '10.177.0.14', power, image: 'test' });
    const d = decider({ imageFor: (b) => (b.id === 'big' ? 'test' : b.image) });
    await expect(d.decide('02:00:00:00:0c:03')).rejects.toThrow('board big: image test cannot boot model qemu-virt-arm64 (arm64): it has no arm64 build (it has armv7)');
    await expect(d.decide('02:00:00:00:0d:04')).rejects.toThrow('board pro: image test cannot boot model bananapro (armv7): it has no device tree sun7i-a20-bananapro.dtb');
    await expect(decider({ imageFor: () => 'odd' }).decide('02:00:00:00:0b:02')).rejects.toThrow('image odd cannot boot model qemu-virt-armv7 (armv7): its armv7 kernel is the rpi flavour, the model needs armmp');
    await expect(decider({ imageFor: () => 'gone' }).decide('02:00:00:00:0a:01')).rejects.toThrow('board bpi: image gone is not in the catalog');
    // The same boards with an image that fits boot.
    const fits = decider({ imageFor: (b) => (b.id === 'big' ? 'wide' : 'slim') });
    expect(await fits.decide('02:00:00:00:0c:03')).toMatchObject({ boardId: 'big', arch: 'arm64', route: 'boot.scr', image: 'wide', kernel: 'images/wide/Image', initrd: 'images/wide/initrd.img', fdt: undefined });
    await expect(fits.decide('02:00:00:00:0d:04')).rejects.toThrow('image slim cannot boot model bananapro (armv7): it has no device tree sun7i-a20-bananapro.dtb');
  });

  it('a multi-arch image gives each model its arch’s kernel, initrd and device tree', async () => {
    await inventory.create({ id: 'm2u', mac: '02:00:00:00:0e:05', model: 'bananapi-m2u', arch: 'armv7', ip: '10.177.0.15', power, image: 'multi', kernelArgs: 'maxcpus=1' });
    const d = decider({ imageFor: () => 'multi' });
    expect(await d.decide('02:00:00:00:0e:05')).toMatchObject({
      route: 'pxe',
      kernel: 'images/multi/vmlinuz',
      initrd: 'images/multi/initrd.img',
      fdt: 'images/multi/dtbs/r40.dtb',
      cmdline: 'console=ttyS0,115200 maxcpus=1',
    });
    expect(await d.decide('02:00:00:00:0c:03')).toMatchObject({ route: 'boot.scr', arch: 'arm64', kernel: 'images/multi/arm64/Image', initrd: 'images/multi/arm64/initrd.img', fdt: undefined, cmdline: 'console=ttyAMA0,115200' });
    // The ARMv7 virt board takes the armv7 build and no device tree (QEMU passes its own).
    expect(await d.decide('02:00:00:00:0b:02')).toMatchObject({ route: 'boot.scr', arch: 'armv7', kernel: 'images/multi/vmlinuz', fdt: undefined });
    // bananapi (A20): multi carries only the R40's device tree.
    await expect(d.decide('02:00:00:00:0a:01')).rejects.toThrow('image multi cannot boot model bananapi (armv7): it has no device tree sun7i-a20-bananapi.dtb');
  });
});

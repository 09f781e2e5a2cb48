import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { bootScriptImage, renderBootScript, renderPxelinux, pxelinuxName } from '../../src/boot/render.js';
import type { BootSpec } from '../../src/boot/spec.js';
import { decodeScriptImage, encodeScriptImage } from '../../src/boot/uimage.js';
import { expectGolden } from '../helpers/golden.js';
import { requireTools } from '../helpers/tools.js';

const T = 1_764_000_000;
const spec: BootSpec = {
  route: 'boot.scr',
  boardId: 'bpi-01',
  mac: '02:00:00:00:00:01',
  ip: '10.77.0.101',
  arch: 'armv7',
  image: 'test',
  kernel: 'images/test/vmlinuz',
  initrd: 'images/test/initrd.img',
  fdt: 'images/test/dtbs/sun7i-a20-bananapi.dtb',
  cmdline: 'console=ttyS0,115200 ds=nocloud-net;s=http://10.77.0.1/m/',
  tftp: { blksize: 1468, windowsize: 16 },
};

describe('U-Boot script image', () => {
  it('is byte-identical to mkimage output for the same script and time', () => {
    requireTools('mkimage');
    const dir = mkdtempSync(join(tmpdir(), 'uimg-'));
    for (const script of ['echo hi\n', 'abc', renderBootScript(spec)]) {
      writeFileSync(join(dir, 's.txt'), script);
      execFileSync('mkimage', ['-A', 'arm', '-O', 'linux', '-T', 'script', '-C', 'none', '-n', 'dozen test', '-d', join(dir, 's.txt'), join(dir, 's.img')], {
        env: { ...process.env, SOURCE_DATE_EPOCH: String(T) },
        stdio: 'ignore',
      });
      expect(encodeScriptImage(script, { name: 'dozen test', time: T })).toEqual(readFileSync(join(dir, 's.img')));
    }
  });

  it('matches the golden file and `mkimage -l` accepts it', () => {
    requireTools('mkimage');
    const img = bootScriptImage(spec, T);
    expectGolden('boot.scr.uimg', img);
    const dir = mkdtempSync(join(tmpdir(), 'uimg-'));
    writeFileSync(join(dir, 'boot.scr.uimg'), img);
    const listing = execFileSync('mkimage', ['-l', join(dir, 'boot.scr.uimg')], { encoding: 'utf8' });
    expect(listing).toMatch(/Image Name:\s+dozen bpi-01/);
    expect(listing).toMatch(/Image Type:\s+ARM Linux Script \(uncompressed\)/);
  });

  it('decodes what it encodes and rejects corruption', () => {
    const img = bootScriptImage(spec, T);
    const d = decodeScriptImage(img);
    expect(d.script).toBe(renderBootScript(spec));
    const bad = Buffer.from(img);
    bad[img.length - 1]! ^= 0xff;
    expect(() => decodeScriptImage(bad)).toThrow(/data CRC/);
  });
});

describe('boot files rendered from a BootSpec', () => {
  it('the script tunes TFTP before fetching, then loads kernel, initrd and device tree', () => {
    const s = renderBootScript(spec);
    expectGolden('boot.scr.txt', s);
    const lines = s.split('\n');
    const at = (re: RegExp) => lines.findIndex((l) => re.test(l));
    expect(at(/^setenv tftpwindowsize 16$/)).toBeGreaterThanOrEqual(0);
    expect(at(/^setenv tftpblocksize 1468$/)).toBeLessThan(at(/tftpboot \$\{kernel_addr_r\}/));
    expect(at(/^setenv tftpwindowsize/)).toBeLessThan(at(/tftpboot \$\{kernel_addr_r\}/));
    expect(s).toContain('setenv bootargs "console=ttyS0,115200 ds=nocloud-net;s=http://10.77.0.1/m/"');
    expect(s).toContain('tftpboot ${fdt_addr_r} images/test/dtbs/sun7i-a20-bananapi.dtb');
    expect(s).toContain('bootz ${kernel_addr_r} ${dozen_initrd} ${dozen_fdt}');
  });

  it('without a device tree the firmware-provided one is used', () => {
    const s = renderBootScript({ ...spec, fdt: undefined });
    expect(s).not.toContain('fdt_addr_r');
    expect(s).toContain('setenv dozen_fdt ${fdtcontroladdr}');
  });

  it('pxelinux.cfg for U-Boot `pxe` matches its golden file', () => {
    expect(pxelinuxName(spec.mac)).toBe('pxelinux.cfg/01-02-00-00-00-00-01');
    expectGolden('pxelinux.cfg', renderPxelinux(spec));
  });

  it('refuses characters that would break out of the script', () => {
    expect(() => renderBootScript({ ...spec, cmdline: 'a" ; reset ; "' })).toThrow(/unsafe/);
    expect(() => renderBootScript({ ...spec, cmdline: 'x=${evil}' })).toThrow(/unsafe/);
    expect(() => renderBootScript({ ...spec, kernel: 'a;reset' })).toThrow(/unsafe/);
  });
});

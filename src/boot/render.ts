import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { renderTemplate } from './template.js';
import { encodeScriptImage } from './uimage.js';
import type { BootSpec } from './spec.js';

const PXE_DIR = fileURLToPath(new URL('../../pxe/', import.meta.url));
const scriptTemplate = readFileSync(`${PXE_DIR}boot.scr.tmpl`, 'utf8');
const pxelinuxTemplate = readFileSync(`${PXE_DIR}pxelinux.cfg.tmpl`, 'utf8');

/** Characters that would end or escape the quoted string or a hush command in the script. */
const UNSAFE = /["$\\\n\r;`]/;

function values(spec: BootSpec) {
  for (const [k, v] of Object.entries({ kernel: spec.kernel, initrd: spec.initrd, fdt: spec.fdt, image: spec.image, ...spec.loadAddrs })) {
    if (v !== undefined && (UNSAFE.test(v) || /\s/.test(v))) throw new Error(`unsafe character in boot spec ${k}: ${v}`);
  }
  // ';' is legal inside the quoted bootargs (cloud-init's ds=nocloud-net;s=...), '"' and '$' are not.
  if (/["$\\\n\r`]/.test(spec.cmdline)) throw new Error(`unsafe character in kernel command line: ${spec.cmdline}`);
  return {
    boardId: spec.boardId,
    mac: spec.mac,
    image: spec.image,
    kernel: spec.kernel,
    initrd: spec.initrd,
    fdt: spec.fdt,
    cmdline: spec.cmdline,
    blksize: spec.tftp.blksize,
    windowsize: spec.tftp.windowsize,
    bootCommand: spec.arch === 'arm64' ? 'booti' : 'bootz',
    kernelAddr: spec.loadAddrs?.kernel,
    ramdiskAddr: spec.loadAddrs?.ramdisk,
    fdtAddr: spec.loadAddrs?.fdt,
  };
}

export function renderBootScript(spec: BootSpec): string {
  return renderTemplate(scriptTemplate, values(spec));
}

export function renderPxelinux(spec: BootSpec): string {
  return renderTemplate(pxelinuxTemplate, values(spec));
}

export function bootScriptImage(spec: BootSpec, time?: number): Buffer {
  return encodeScriptImage(renderBootScript(spec), { name: `dozen ${spec.boardId}`, time });
}

/** pxelinux.cfg file name U-Boot asks first: 01- then the MAC with dashes. */
export function pxelinuxName(mac: string): string {
  return `pxelinux.cfg/01-${mac.toLowerCase().replace(/:/g, '-')}`;
}

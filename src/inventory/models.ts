/**
 * What the server must know about a board model to boot it: its serial console device (for the
 * kernel command line) and which device tree of an image it needs (none: the firmware supplies one).
 */
export interface ModelInfo {
  console: string;
  dtb?: string;
}

export const MODELS: Record<string, ModelInfo> = {
  'qemu-virt': { console: 'ttyAMA0,115200' }, // the virtual lab: QEMU passes its own device tree
  bananapi: { console: 'ttyS0,115200', dtb: 'bananapi' },
  bananapro: { console: 'ttyS0,115200', dtb: 'bananapro' },
};

export function modelInfo(model: string): ModelInfo {
  return MODELS[model] ?? { console: 'ttyS0,115200' };
}

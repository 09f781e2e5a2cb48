import { archBoot, imageArches, type ArchBoot, type Manifest } from '../images/catalog.js';
import type { BoardModel } from '../inventory/models.js';
import type { Arch } from '../store/schema.js';

/** What an image boots on one model: the image's variant for the model's arch, and its device tree path. */
export interface ImageFit {
  arch: Arch;
  boot: ArchBoot;
  /** Path of the model's device tree inside the image; absent: the firmware's own. */
  dtb?: string;
}

/**
 * Can `image` boot a board of `model`? The fit, or why not, in words that name both (the lease API's
 * 409 says this sentence). Checked in order: the arch, the kernel flavour, the device tree.
 */
export function fitImage(name: string, m: Manifest, model: BoardModel): ImageFit | { error: string } {
  const boot = archBoot(m, model.arch);
  const on = `model ${model.id} (${model.arch})`;
  if (!boot) return { error: `image ${name} cannot boot ${on}: it has no ${model.arch} build (it has ${imageArches(m).join(', ')})` };
  if (boot.flavour && boot.flavour !== model.kernelFlavour) {
    return { error: `image ${name} cannot boot ${on}: its ${model.arch} kernel is the ${boot.flavour} flavour, the model needs ${model.kernelFlavour}` };
  }
  if (!model.dtb) return { arch: model.arch, boot };
  // Device trees are keyed by the kernel's file name; imports before models-as-data keyed them by model.
  const dtb = boot.dtbs[model.dtb] ?? (Object.hasOwn(boot.dtbs, model.id) ? boot.dtbs[model.id] : undefined);
  if (!dtb) return { error: `image ${name} cannot boot ${on}: it has no device tree ${model.dtb}` };
  return { arch: model.arch, boot, dtb };
}

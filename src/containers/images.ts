import { createReadStream, existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BadRequestError, NotFoundError } from '../util/errors.js';
import { mapEngineError } from './errors.js';
import type { ContainerHost } from './host.js';
import { LABEL, type Platform } from './types.js';

/**
 * A container image we can put on any board ourselves: no registry is needed (or reachable), the
 * rootfs tarball is `docker import`ed through the board's API the first time a lease needs it.
 */
export interface ContainerImageSource {
  ref: string;
  platform: Platform;
  tarPath: string;
  /** Dockerfile-style changes applied at import (CMD, ENV, LABEL, EXPOSE). */
  changes: string[];
  sha256?: string;
}

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const BUILT_ARMHF_IMAGE_DIR = join(REPO_ROOT, 'images/container-armhf/build');

/** Reads an image builder's output (`image.json` beside its tarball), e.g. images/container-armhf/build. */
export function loadBuiltImage(dir = BUILT_ARMHF_IMAGE_DIR): ContainerImageSource {
  const file = join(dir, 'image.json');
  if (!existsSync(file)) throw new Error(`no container image built in ${dir} (run images/container-armhf/build.sh)`);
  const m = JSON.parse(readFileSync(file, 'utf8')) as { ref: string; platform: string; tar: string; changes?: string[]; sha256?: string };
  return { ref: m.ref, platform: m.platform, tarPath: join(dir, m.tar), changes: m.changes ?? [], sha256: m.sha256 };
}

/** Image inspect → platform: our label first (`docker import` on 20.10 drops --platform), then Docker's fields. */
export function platformOfImage(img: { Os?: string; Architecture?: string; Variant?: string; Config?: { Labels?: Record<string, string> | null } }): Platform {
  const label = img.Config?.Labels?.[LABEL.platform];
  if (label) return label;
  return [img.Os ?? 'linux', img.Architecture ?? 'unknown', img.Variant].filter(Boolean).join('/');
}

/** Reads an import/pull/load progress stream to its end; Docker reports failures inside it, with HTTP 200. */
export async function drain(stream: NodeJS.ReadableStream): Promise<void> {
  let text = '';
  for await (const chunk of stream) text += chunk.toString();
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    let msg: { error?: string };
    try {
      msg = JSON.parse(line);
    } catch {
      continue;
    }
    if (msg.error) throw new Error(msg.error);
  }
}

const inflight = new Map<string, Promise<Platform>>();

/**
 * Makes sure `ref` is on the board and returns its platform: present → inspect; absent and we have
 * a source → import it (once, even for concurrent leases); absent otherwise → 400.
 */
export function ensureImage(host: ContainerHost, ref: string, sources: ContainerImageSource[]): Promise<Platform> {
  const key = `${host.id}\0${ref}`;
  let p = inflight.get(key);
  if (!p) {
    p = ensureImageOnce(host, ref, sources).finally(() => inflight.delete(key));
    inflight.set(key, p);
  }
  return p;
}

async function ensureImageOnce(host: ContainerHost, ref: string, sources: ContainerImageSource[]): Promise<Platform> {
  const inspect = () => host.call(`inspect image ${ref}`, (d) => d.getImage(ref).inspect(), `image ${ref} on ${host.id}`);
  try {
    return platformOfImage(await inspect());
  } catch (err) {
    if (!(err instanceof NotFoundError)) throw err;
  }
  const src = sources.find((s) => s.ref === ref);
  if (!src) throw new BadRequestError(`image ${ref} is not on shared board ${host.id} and no image source provides it`);
  const [repo, tag] = splitRef(ref);
  try {
    const out = await host.streams.importImage(createReadStream(src.tarPath), { repo, tag, changes: src.changes });
    await drain(out);
  } catch (err) {
    throw mapEngineError(host.id, host.describe(), `import image ${ref} from ${src.tarPath}`, err);
  }
  return platformOfImage(await inspect());
}

function splitRef(ref: string): [string, string] {
  const at = ref.lastIndexOf(':');
  return at > ref.lastIndexOf('/') ? [ref.slice(0, at), ref.slice(at + 1)] : [ref, 'latest'];
}

import { PassThrough } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { removeContainer } from './container-create.js';
import { usableHost, type DriverContext } from './context.js';
import type { ContainerHost } from './host.js';
import { drain } from './images.js';
import { placeLease } from './place-lease.js';
import { LABEL, type ContainerLease, type ContainerLeaseSpec, type RecordedContainerLease } from './types.js';

export interface Migration {
  lease: ContainerLease;
  /** The container's image as committed, saved on the old board and loaded on the new one. */
  bytesMoved: number;
  /** From the stop on the old board to the start on the new one (the caller adds the wait for SSH). */
  stoppedMs: number;
  /**
   * Where that time went: stop; then two paths at once, commit → copy (save → load) and unmount → attach
   * (/data); then create (create and start on the new board).
   */
  phasesMs: Record<'stop' | 'commit' | 'unmount' | 'copy' | 'attach' | 'create', number>;
}

/**
 * Moves a running lease to another board and keeps its changes (a drain): the container stops (what it
 * wrote is then all on disk), is committed, its image saved on the old board and loaded on the new one,
 * its volume unmounted here and attached there (fenced from here), and the same lease is created from
 * the committed image with the same spec, keys and /data. On a failure before the new container runs,
 * the old one is started again where it was. The caller holds the lease's lock.
 */
export async function migrateLease(
  ctx: DriverContext,
  record: RecordedContainerLease,
  spec: ContainerLeaseSpec,
  exclude: string[],
  onPlaced?: (lease: ContainerLease) => Promise<void>,
): Promise<Migration> {
  const from = usableHost(ctx.pool, record.hostId);
  const c = from.streams.getContainer(record.containerId);
  const leaseId = record.leaseId;
  // The platform the new board must run, from the container's label (no need to wait for the commit).
  const platform = (await from.call(`inspect the container of lease ${leaseId}`, () => c.inspect())).Config?.Labels?.[LABEL.platform];
  const t0 = Date.now();
  const phasesMs = { stop: 0, commit: 0, unmount: 0, copy: 0, attach: 0, create: 0 };
  const since = (t: number) => Date.now() - t;
  await from.call(`stop the container of lease ${leaseId}`, () => c.stop({ t: ctx.stopTimeoutS })).catch((err: { message: string }) => {
    if (!/not modified|already stopped|304/i.test(err.message)) throw err;
  });
  phasesMs.stop = since(t0);
  const repo = `dozen-moved/${leaseId}`;
  const tag = t0.toString(36);
  const ref = `${repo}:${tag}`;
  let bytesMoved = 0;
  let attachedTo: ContainerHost | null = null;
  // Two paths at once once it has stopped: commit → copy the image, and unmount /data → attach it there.
  const t1 = Date.now();
  const committed = from.call(`commit the container of lease ${leaseId}`, () => c.commit({ repo, tag, pause: false })).then(() => void (phasesMs.commit = since(t1)));
  const unmounted = ctx.volumes.detach(from, leaseId).then(() => void (phasesMs.unmount = since(t1)));
  committed.catch(() => {});
  unmounted.catch(() => {});
  try {
    const lease = await placeLease(ctx, spec, [...exclude, from.id], {
      ...(platform ? { platform } : {}),
      prepare: async (to) => {
        const [bytes, data] = await Promise.all([
          committed.then(() => copyImage(from, to, ref)).then((b) => ((phasesMs.copy = since(t1) - phasesMs.commit), b)),
          unmounted.then(async () => {
            const d = await ctx.volumes.attach(to, leaseId);
            attachedTo = to;
            phasesMs.attach = since(t1) - phasesMs.unmount;
            return d;
          }),
        ]);
        bytesMoved = bytes;
        return { image: ref, data };
      },
    });
    const stoppedMs = since(t0);
    phasesMs.create = stoppedMs - phasesMs.stop - Math.max(phasesMs.commit + phasesMs.copy, phasesMs.unmount + phasesMs.attach);
    // The caller records the new container before the old one goes: a crash from here on finds the
    // lease where it runs now, and at worst an old, stopped copy that reconcile removes.
    await onPlaced?.(lease).catch((err) => ctx.log.error({ err, lease: leaseId }, 'moved: recording the new container failed'));
    await removeContainer(from, record).catch((err) => ctx.log.warn({ err: (err as Error).message, lease: leaseId }, 'moved: the old container is left for reconcile'));
    await removeMovedImages(from, leaseId);
    return { lease, bytesMoved, stoppedMs, phasesMs };
  } catch (err) {
    // Back where it was: its volume (fenced from where it went) mounted here again, the old container started.
    await Promise.allSettled([committed, unmounted]);
    try {
      const there = attachedTo as ContainerHost | null;
      if (there) await ctx.volumes.detach(there, leaseId).catch(() => {});
      await ctx.volumes.attach(from, leaseId); // idempotent: mounted again here whatever step failed
      await from.call(`restart the container of lease ${leaseId}`, () => c.start());
    } catch (back) {
      ctx.log.error({ err: back, lease: leaseId }, 'a failed move could not restart the container where it was');
      (err as Error).message += `; and it could not be restarted on ${from.id}: ${(back as Error).message}`;
    }
    await from.call(`remove ${ref}`, (d) => d.getImage(ref).remove()).catch(() => {});
    throw err;
  }
}

/** Bounds one image copy: a board that dies mid-save must not hold the move (and its locks) forever. */
const COPY_TIMEOUT_MS = 15 * 60_000;

/** `docker save` on one engine piped into `docker load` on the other; returns the bytes that crossed. */
async function copyImage(from: ContainerHost, to: ContainerHost, ref: string): Promise<number> {
  const abort = AbortSignal.timeout(COPY_TIMEOUT_MS);
  const saved = (await from.streams.getImage(ref).get()) as NodeJS.ReadableStream;
  let bytes = 0;
  const counted = new PassThrough();
  counted.on('data', (b: Buffer) => (bytes += b.length));
  // pipeline: an error or the timeout on either side ends both (a plain pipe would leave load waiting).
  const piped = pipeline(saved, counted, { signal: abort });
  const out = (await to.streams.loadImage(counted, { quiet: true, abortSignal: abort })) as NodeJS.ReadableStream;
  await drain(out).catch((err: Error) => {
    throw new Error(`load ${ref} on ${to.id}: ${err.message}`);
  });
  await piped;
  return bytes;
}

/** A lease's committed images (`dozen-moved/<lease>`) on a board, except `keep`: its tenant's root fs must not outlive where it runs. */
export async function removeMovedImages(host: ContainerHost, leaseId: string, keep?: string): Promise<void> {
  const tags = await host
    .call('list images', (d) => d.listImages({ filters: { reference: [`dozen-moved/${leaseId}`] } }))
    .then((list) => list.flatMap((i) => i.RepoTags ?? []))
    .catch(() => [] as string[]);
  for (const t of tags) if (t !== keep) await host.call(`remove ${t}`, (d) => d.getImage(t).remove({ force: true })).catch(() => {});
}

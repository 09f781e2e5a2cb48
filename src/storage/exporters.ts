import { z } from 'zod';
import { Tgtadm } from './tgtadm.js';
import { TgtExporter, type TargetExporter } from './tgt-exporter.js';

/** What a target exporter is built from: `{ driver: 'tgt', ...that driver's parameters }`. */
export type TargetExporterSpec = { driver: string } & Record<string, unknown>;

/** The tgt driver: a tgtd that runs already (TgtDaemon), reached by its control port. */
export const tgtSpec = z.object({
  /** tgtd's management port (`tgtd -C`): ours, never the system tgtd's 0; tgtd accepts at most 32767. */
  controlPort: z.number().int().min(1).max(32767),
  /** Where that tgtd's portal listens and initiators connect: the boot network address, in production. */
  portalIp: z.ipv4(),
  portalPort: z.number().int().min(1).max(65535).default(3260),
  /** O_DIRECT backing stores (bench/iscsi-perf.ts). */
  directIo: z.boolean().default(false),
});

/** Every target exporter, by the name its spec's `driver` uses: the compiler sees them all. */
export const TARGET_EXPORTERS: Record<string, (spec: TargetExporterSpec) => TargetExporter> = {
  tgt: (spec) => {
    const o = tgtSpec.parse(spec);
    return new TgtExporter(new Tgtadm(o.controlPort), { ip: o.portalIp, port: o.portalPort }, { directIo: o.directIo });
  },
};

/** The exporter a spec names; an unknown name lists the known ones, bad parameters say which. */
export function targetExporter(spec: TargetExporterSpec): TargetExporter {
  // Own keys only: "constructor" or "toString" must not reach Object.prototype's.
  const factory = Object.hasOwn(TARGET_EXPORTERS, spec.driver) ? TARGET_EXPORTERS[spec.driver] : undefined;
  if (!factory) throw new Error(`unknown target exporter "${spec.driver}" (known: ${Object.keys(TARGET_EXPORTERS).join(', ')})`);
  try {
    return factory(spec);
  } catch (err) {
    if (err instanceof z.ZodError) throw new Error(`bad parameters for target exporter "${spec.driver}": ${z.prettifyError(err)}`);
    throw err;
  }
}

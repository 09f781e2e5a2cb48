import type { Job, Lease } from '../store/schema.js';

/**
 * Every lease job's steps, in the order they run, per lease kind and job kind: the one list jobs, the API
 * and the CLI name steps from. A job records these names and the runner finds each implementation by
 * name, also for a job recorded before a restart, so a renamed step strands the jobs recorded under the
 * old name. The implementations (service.ts) are keyed by these types: a missing one does not compile.
 */
export const STEPS = {
  board: {
    provision: ['network', 'disk', 'power', 'dhcp', 'kernel', 'root', 'phone-home'],
    reimage: ['power-off', 'network', 'disk', 'power', 'dhcp', 'kernel', 'root', 'phone-home'],
    release: ['power-off', 'network', 'firmware', 'disk', 'console', 'board'],
    // A tenant's power action: it never changes the lease's state.
    power: ['power'],
  },
  container: {
    provision: ['container'],
    reimage: ['container'],
    release: ['container', 'console'],
    power: ['power'],
  },
} as const satisfies Record<Lease['kind'], Record<Job['kind'], readonly string[]>>;

type StepsOf<K extends Lease['kind']> = (typeof STEPS)[K][Job['kind']][number];
export type BoardStep = StepsOf<'board'>;
export type ContainerStep = StepsOf<'container'>;
/** A lease job step's name, as jobs record it and the API and CLI show it. */
export type StepName = BoardStep | ContainerStep;

/** The steps a job of this kind runs for a lease of this kind. */
export function jobSteps(lease: Lease['kind'], job: Job['kind']): readonly StepName[] {
  return STEPS[lease][job];
}

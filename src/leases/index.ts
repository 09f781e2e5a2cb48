/** Leases: the service (the one writer of lease state), its jobs' steps, the metadata service, and the lease rules other parts ask. */
export { Bus, type BusEvent } from './bus.js';
export { leaseConsoleHooks, resumeBoardLeaseLogs, resumeContainerConsoles } from './console-hooks.js';
export { imageUsers } from './image-users.js';
export { metadataApp, metadataKernelArgs, newBootToken, serveMetadata } from './metadata.js';
export type { BoardStorage, ConsoleHooks, ContainerFailover, ContainerLeases, NetworkHooks } from './ports.js';
export { leaseLimits, LeaseService, publicLease, type LeaseServiceDeps } from './service.js';
export { jobSteps, STEPS, type BoardStep, type ContainerStep, type StepName } from './steps.js';
export { LeaseSignals } from './waits.js';

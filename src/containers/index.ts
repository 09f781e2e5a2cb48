/** Container leases on shared boards: see driver.ts for the lease operations, pool.ts for health. */
export { ContainerLeaseDriver, containerName, type ContainerLeaseDriverOptions, type ExecResult } from './driver.js';
export { ContainerHost, containerHostConfigSchema, platformOfArch, quotaSupport, type ContainerHostConfig, type HostFacts, type HostUsage, type QuotaSupport } from './host.js';
export { ContainerPool, type HostHealth, type HostState, type PoolOptions } from './pool.js';
export { choosePlacement, NoCapacityError, type PlacementCandidate, type PlacementNeed } from './placement.js';
export { failoverLeases, watchFailover, type FailoverResult } from './failover.js';
export { ensureImage, loadBuiltImage, platformOfImage, BUILT_ARMHF_IMAGE_DIR, type ContainerImageSource } from './images.js';
export { ContainerConsole } from './console.js';
export { READY_MARKER, waitForConsoleMarker, waitForSshBanner } from './ready.js';
export { HostUnavailableError, EngineError } from './errors.js';
export { tenantNetworkName, type OutboundPolicy } from './network.js';
export { containersConfigSchema, createContainerBackend, type ContainerBackend, type ContainersConfig } from './config.js';
export * from './types.js';
export { DATA_PATH, NO_VOLUMES, type LeaseVolumes } from './volumes.js';

export { BootEngineTls, ENGINE_TLS_FILES, isEngineTlsFile, type EngineTlsFile } from './engine-tls.js';
export { ENGINE_PORT, SharedBoards, type SharedBoardStatus, type SharedBoardsOptions } from './shared-boards.js';
export { KeepReady, type KeepReadyOptions } from './keep-ready.js';
export { BoardVolumes, volumeMountPath, type BoardVolumesOptions } from './board-volumes.js';
export { BoardDrains, type DrainStatus, type MovedLease } from './drain.js';

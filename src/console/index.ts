/** The serial console: sources (local devices, network serial servers), per-board sessions, the WebSocket bridge. */
export { ConsoleSessions, type ConsoleSessionsOptions, type ConsoleBoard } from './sessions.js';
export { attachConsoleWebSocket, consoleToken, type ConsoleAuthorize, type ConsoleGrant, type ConsoleKind, type ConsoleWebSocket, type ConsoleWebSocketOptions } from './ws-bridge.js';
export { openConsoleSource, connectorFor } from './sources.js';
export { ReconnectingSource, backoffDelay, DEFAULT_BACKOFF, type BackoffOptions } from './reconnect.js';
export { SerialPort, type SerialBinding } from './serial-port.js';
export type { ConsoleSource, ConsoleState, LinkState, Transport, Connector } from './source.js';
export * from './protocol.js';

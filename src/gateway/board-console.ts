import type { BoardSession, Viewer } from '../console/session.js';
import type { GatewayConsoleAttachment, GatewayConsoleSink } from './gateway.js';

/**
 * `GatewayDeps.attachConsole` for a board's console session: an SSH viewer is one more `Viewer` of the
 * same `BoardSession` the WebSocket bridge uses (same scrollback, same typing rules, same lease log).
 * Line-state changes and join/leave notices go to the sink's notice (the channel's stderr). Throws when
 * the console already has `maxViewers`.
 */
export function attachBoardSession(session: BoardSession, who: string, sink: GatewayConsoleSink, maxViewers?: number): GatewayConsoleAttachment {
  // The same bound as the WebSocket bridge's (limits.viewersPerConsole): SSH is not a way around it.
  if (maxViewers !== undefined && session.viewerList().length >= maxViewers) throw new Error(`this console has ${maxViewers} viewers already`);
  const viewer: Viewer = {
    who,
    canType: true,
    send: (chunk) => sink.data(chunk),
    notify: (msg) => {
      if (msg.type === 'info') sink.notice?.(msg.message);
      else if (msg.state !== 'connected') sink.notice?.(`console line ${msg.state}`);
    },
    end: (reason) => sink.end(reason),
  };
  const scrollback = session.attach(viewer);
  return { scrollback, write: (bytes) => session.write(viewer, bytes), detach: () => session.detach(viewer) };
}

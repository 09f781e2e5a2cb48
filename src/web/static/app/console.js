// The embedded serial console: xterm.js (the UMD globals Terminal and FitAddon, loaded by index.html) over
// the console WebSocket — the lease page's code (../lease.js) as a module. The session cookie authenticates
// the upgrade (the browser sends it; the server checks the Origin), so no token travels in the page.
// Protocol: src/console/protocol.ts (binary frames = raw bytes, text frames = JSON control messages).
const SUBPROTOCOL = 'dozen.console.v1';

/** Opens the console of lease `leaseId` in `el`; onStatus(text, 'up'|'down'|'muted'). Returns { close }. */
export function openConsole(el, leaseId, onStatus = () => {}) {
  // logLevel off: a serial line carries broken escapes (systemd cuts its colour codes at 80 columns), and
  // xterm would report each one as a console error.
  const term = new Terminal({ logLevel: 'off', cursorBlink: true, scrollback: 5000, convertEol: false, fontSize: 13 });
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(el);
  fit.fit();
  window.dozenTerm = term; // for tests and the curious: the live terminal
  const encoder = new TextEncoder();
  let ws = null;
  let closed = false;
  let retryMs = 1000;
  let timer;

  function connect() {
    const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/v1/leases/' + encodeURIComponent(leaseId) + '/console';
    const sock = new WebSocket(url, [SUBPROTOCOL]);
    ws = sock;
    sock.binaryType = 'arraybuffer';
    onStatus('connecting…', 'muted');
    sock.onmessage = (ev) => {
      if (typeof ev.data !== 'string') return term.write(new Uint8Array(ev.data));
      let m;
      try {
        m = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (m.type === 'state') onStatus('console ' + m.state + (m.lastError ? ': ' + m.lastError : ''), m.state === 'connected' ? 'up' : 'down');
      else if (m.event === 'hello') {
        term.reset(); // the scrollback follows: replaying it on a clean screen avoids duplicates after a reconnect
        retryMs = 1000;
        term.options.disableStdin = !m.canType;
      } else if (m.event === 'denied' || m.event === 'error' || m.event === 'slow' || m.event === 'break') {
        term.write('\r\n\x1b[33m[dozen] ' + m.message + '\x1b[0m\r\n');
      }
    };
    sock.onopen = () => sock.send(JSON.stringify({ type: 'resize', cols: term.cols, rows: term.rows }));
    sock.onclose = (ev) => {
      if (ws !== sock || closed) return;
      ws = null;
      // 4003: what the socket was granted for ended. Released or token revoked: final; reimaged: a new boot, reconnect.
      if (ev.code === 4003 && /released|revoked|expired|removed/.test(ev.reason)) {
        onStatus('console closed: ' + ev.reason, 'muted');
        return;
      }
      onStatus('console disconnected (' + ev.code + ') — retrying in ' + Math.round(retryMs / 1000) + ' s', 'down');
      timer = setTimeout(connect, retryMs);
      retryMs = Math.min(retryMs * 2, 15000);
    };
  }

  term.onData((s) => ws && ws.readyState === 1 && ws.send(encoder.encode(s)));
  term.onBinary((s) => ws && ws.readyState === 1 && ws.send(Uint8Array.from(s, (c) => c.charCodeAt(0))));
  const onResize = () => {
    fit.fit();
    if (ws && ws.readyState === 1) ws.send(JSON.stringify({ type: 'resize', cols: term.cols, rows: term.rows }));
  };
  window.addEventListener('resize', onResize);
  connect();
  return {
    term,
    sendBreak: () => ws && ws.readyState === 1 && ws.send(JSON.stringify({ type: 'break' })),
    close() {
      closed = true;
      clearTimeout(timer);
      window.removeEventListener('resize', onResize);
      if (ws) ws.close(1000, 'page left');
      ws = null;
      term.dispose();
      if (window.dozenTerm === term) window.dozenTerm = undefined;
    },
  };
}

// The lease page: live serial console (xterm.js over the console WebSocket), lease state, power and reimage.
// Plain browser JS, no bundler; the protocol is src/console/protocol.ts (binary = raw bytes, text = JSON).
(function () {
  'use strict';
  const SUBPROTOCOL = 'dozen.console.v1';
  const TOKEN_KEY = 'dozen.token';
  const leaseId = decodeURIComponent(location.pathname.split('/').filter(Boolean)[1] || '');
  const $ = (id) => document.getElementById(id);
  $('lease-id').textContent = leaseId;

  // logLevel off: a serial line carries broken escapes (systemd cuts its colour codes at 80 columns).
  const term = new Terminal({ logLevel: 'off', cursorBlink: true, scrollback: 10000, convertEol: false, fontSize: 14 });
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open($('terminal'));
  fit.fit();
  window.dozenTerm = term; // for tests and the curious: the live terminal

  let ws = null;
  let retryMs = 1000;
  let me = '';
  const encoder = new TextEncoder();

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }
  function askToken(why) {
    sessionStorage.removeItem(TOKEN_KEY);
    $('token-form').hidden = false;
    status(why || 'an API token is needed', 'down');
    $('token-input').focus();
  }
  $('token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $('token-input').value.trim());
    $('token-form').hidden = true;
    start();
  });

  function status(text, cls) {
    const el = $('status');
    el.textContent = text;
    el.className = 'status ' + (cls || 'muted');
  }

  async function api(method, path, body) {
    const res = await fetch(path, {
      method,
      // No token in this tab: the web UI's session cookie (HttpOnly, sent by the browser) authenticates instead.
      headers: Object.assign(token() ? { authorization: 'Bearer ' + token() } : {}, body ? { 'content-type': 'application/json' } : {}),
      body: body ? JSON.stringify(body) : undefined,
    });
    let data = null;
    try { data = await res.json(); } catch { /* empty or not JSON */ }
    return { status: res.status, ok: res.ok, data };
  }

  async function loadLease() {
    const r = await api('GET', '/v1/leases/' + encodeURIComponent(leaseId));
    if (r.status === 401) return askToken('token refused: ' + ((r.data && r.data.error) || 'unauthorized')), false;
    const el = $('lease-state');
    if (r.status === 404) {
      el.textContent = 'lease details unavailable (404): it may have been released, or is not yours';
    } else if (!r.ok) {
      el.textContent = 'lease details unavailable (' + r.status + ')';
    } else {
      const l = r.data || {};
      el.textContent = [l.state && 'state: ' + l.state, l.boardId && 'board: ' + l.boardId, l.image && 'image: ' + l.image].filter(Boolean).join(' · ') || 'lease loaded';
      $('btn-cycle').disabled = false;
      $('btn-reimage').disabled = false;
    }
    return true;
  }

  async function action(label, method, path, body) {
    if (!confirm(label + ' lease ' + leaseId + '?')) return;
    const r = await api(method, path, body);
    term.write('\r\n\x1b[33m[dozen] ' + label + ': ' + (r.ok ? 'requested' : 'failed (' + r.status + (r.data && r.data.error ? ': ' + r.data.error : '') + ')') + '\x1b[0m\r\n');
    if (r.ok) loadLease();
  }
  $('btn-cycle').onclick = () => action('Power cycle', 'POST', '/v1/leases/' + encodeURIComponent(leaseId) + '/power', { action: 'cycle' });
  $('btn-reimage').onclick = () => action('Reimage', 'POST', '/v1/leases/' + encodeURIComponent(leaseId) + '/reimage');
  $('btn-break').onclick = () => ws && ws.readyState === 1 && ws.send(JSON.stringify({ type: 'break' }));

  function connect() {
    const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/v1/leases/' + encodeURIComponent(leaseId) + '/console';
    // Browsers cannot set Authorization on a WebSocket: the token travels as the `bearer.<token>` subprotocol.
    const sock = new WebSocket(url, token() ? [SUBPROTOCOL, 'bearer.' + token()] : [SUBPROTOCOL]);
    ws = sock;
    sock.binaryType = 'arraybuffer';
    status('connecting…');
    sock.onmessage = (ev) => {
      if (typeof ev.data !== 'string') return term.write(new Uint8Array(ev.data));
      const m = JSON.parse(ev.data);
      if (m.type === 'state') {
        status('console ' + m.state + (m.lastError ? ': ' + m.lastError : '') + ' · ' + m.target, m.state === 'connected' ? 'up' : 'down');
      } else if (m.event === 'hello') {
        term.reset(); // the scrollback follows: replaying it on a clean screen avoids duplicates after a reconnect
        me = m.who;
        retryMs = 1000;
        $('btn-break').disabled = !m.canType;
        term.options.disableStdin = !m.canType;
      } else if (m.event === 'typing' && m.who !== me) {
        $('lease-state').title = m.message;
        status(m.message, 'muted');
      } else if (m.event === 'denied' || m.event === 'error' || m.event === 'slow' || m.event === 'break') {
        term.write('\r\n\x1b[33m[dozen] ' + m.message + '\x1b[0m\r\n');
      }
    };
    sock.onopen = () => sock.send(JSON.stringify({ type: 'resize', cols: term.cols, rows: term.rows }));
    sock.onclose = (ev) => {
      if (ws !== sock) return;
      ws = null;
      $('btn-break').disabled = true;
      status('disconnected (' + ev.code + ') — retrying in ' + Math.round(retryMs / 1000) + ' s', 'down');
      setTimeout(async () => {
        // A refused upgrade looks like any failure to a browser: ask the API whether the token still works.
        if ((await loadLease()) !== false) connect();
      }, retryMs);
      retryMs = Math.min(retryMs * 2, 15000);
    };
  }

  term.onData((s) => ws && ws.readyState === 1 && ws.send(encoder.encode(s)));
  term.onBinary((s) => ws && ws.readyState === 1 && ws.send(Uint8Array.from(s, (c) => c.charCodeAt(0))));
  window.addEventListener('resize', () => {
    fit.fit();
    if (ws && ws.readyState === 1) ws.send(JSON.stringify({ type: 'resize', cols: term.cols, rows: term.rows }));
  });

  async function start() {
    // Signed in to the web UI (/)? Its session cookie serves here too, and no token is asked for or kept.
    if (!token() && !(await api('GET', '/v1/session')).data?.signedIn) return askToken();
    if ((await loadLease()) === false) return;
    connect();
    term.focus();
  }
  start();
})();

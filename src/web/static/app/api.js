// The API from the browser: same origin, the session cookie (HttpOnly: this code never sees the token).

export class ApiError extends Error {
  constructor(status, message, data) {
    super(message);
    this.status = status;
    this.data = data;
  }
}

const listeners401 = new Set();
/** Called when the API answers 401 (session ended: token revoked or expired, signed out elsewhere). */
export const on401 = (fn) => (listeners401.add(fn), () => listeners401.delete(fn));

export async function api(method, path, body) {
  const res = await fetch('/v1' + path, {
    method,
    credentials: 'same-origin',
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = text;
  }
  if (!res.ok) {
    const err = new ApiError(res.status, (data && data.error) || res.status + ' ' + res.statusText, data);
    if (res.status === 401 && path !== '/session') for (const fn of listeners401) fn(err);
    throw err;
  }
  return data;
}

/**
 * The API's event stream (GET /v1/events, Server-Sent Events with the cookie): one per signed-in page,
 * shared by the views. subscribe(type, fn) → unsubscribe. EventSource reconnects by itself.
 */
export function eventStream() {
  const handlers = new Map();
  const es = new EventSource('/v1/events', { withCredentials: true });
  const dispatch = (type) => (ev) => {
    let data;
    try {
      data = JSON.parse(ev.data);
    } catch {
      return;
    }
    for (const fn of handlers.get(type) || []) fn(data);
  };
  for (const t of ['job', 'lease', 'board', 'end']) es.addEventListener(t, dispatch(t));
  return {
    subscribe(type, fn) {
      if (!handlers.has(type)) handlers.set(type, new Set());
      handlers.get(type).add(fn);
      return () => handlers.get(type).delete(fn);
    },
    close: () => es.close(),
  };
}

import type { Server as HttpServer } from 'node:http';

type Listener = { listen: (port: number, host: string, cb: () => void) => HttpServer };

/** An express app (or any listener) listening on host:port; rejects if it cannot bind. */
export function listen(app: Listener, host: string, port: number): Promise<HttpServer> {
  return new Promise<HttpServer>((res, rej) => {
    const s = app.listen(port, host, () => res(s)).once('error', rej);
  });
}

/** The API's HTTP server on `address` (host:port, port 0 for any) and the URL it answers on. */
export async function serveApi(app: Listener, address: string, limits: { headersTimeoutMs: number; requestTimeoutMs: number }): Promise<{ http: HttpServer; url: string }> {
  const [host, port] = splitHostPort(address);
  const http = await listen(app, host, port);
  // Headers must come quickly; a whole request may take long (image uploads), but not for ever.
  http.headersTimeout = limits.headersTimeoutMs;
  http.requestTimeout = limits.requestTimeoutMs;
  const addr = http.address();
  return { http, url: `http://${host}:${typeof addr === 'object' && addr ? addr.port : port}` };
}

export function splitHostPort(s: string): [string, number] {
  const i = s.lastIndexOf(':');
  return [s.slice(0, i), Number(s.slice(i + 1))];
}

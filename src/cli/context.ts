import type { Command } from 'commander';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { nextPage } from '../api/paging.js';

/** Where `dozen login` keeps the server URL and token (mode 0600). */
export const LOGIN_FILE = process.env.DOZEN_LOGIN_FILE ?? join(process.env.XDG_CONFIG_HOME ?? join(homedir(), '.config'), 'dozen', 'login.json');

export interface Login {
  url: string;
  token: string;
}

export async function saveLogin(l: Login): Promise<void> {
  await mkdir(dirname(LOGIN_FILE), { recursive: true, mode: 0o700 });
  await writeFile(LOGIN_FILE, JSON.stringify(l, null, 2) + '\n', { mode: 0o600 });
}

/** Flags win over the environment (DOZEN_URL, DOZEN_TOKEN), which wins over the saved login. */
export async function resolveLogin(flags: { url?: string; token?: string }): Promise<Login> {
  const saved: Partial<Login> = JSON.parse(await readFile(LOGIN_FILE, 'utf8').catch(() => '{}'));
  const url = flags.url || process.env.DOZEN_URL || saved.url;
  const token = flags.token || process.env.DOZEN_TOKEN || saved.token;
  if (!url || !token) throw new Error('not logged in: run `dozen login --url http://HOST:PORT --token TOKEN` (or set DOZEN_URL and DOZEN_TOKEN)');
  return { url: url.replace(/\/$/, ''), token };
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** A small client for the HTTP API: JSON in, JSON out, errors carry the server's message. */
export class ApiClient {
  constructor(readonly login: Login) {}

  async call<T = any>(method: string, path: string, body?: unknown): Promise<T> {
    let res: Response;
    try {
      res = await fetch(`${this.login.url}/v1${path}`, {
        method,
        headers: { authorization: `Bearer ${this.login.token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (err) {
      throw new Error(`cannot reach ${this.login.url}: ${(err as Error).cause ?? (err as Error).message}`);
    }
    const text = await res.text();
    const json = text ? JSON.parse(text) : undefined;
    if (!res.ok) throw new ApiError(res.status, `${res.status}: ${json?.error ?? text}`);
    return json as T;
  }

  /** A list, every page of it: follows the API's `Link: <…>; rel="next"` (src/api/paging.ts). */
  async list<T = any>(path: string): Promise<T[]> {
    const out: T[] = [];
    for (let next: string | undefined = path; next; ) {
      const res: Response = await fetch(`${this.login.url}/v1${next}`, { headers: { authorization: `Bearer ${this.login.token}` } }).catch((err: Error) => {
        throw new Error(`cannot reach ${this.login.url}: ${err.cause ?? err.message}`);
      });
      const text = await res.text();
      const json = text ? JSON.parse(text) : undefined;
      if (!res.ok) throw new ApiError(res.status, `${res.status}: ${json?.error ?? text}`);
      out.push(...(json as T[]));
      next = nextPage(res.headers.get('link'));
    }
    return out;
  }

  /** Follow the SSE stream, calling fn for each event until it returns true (or the stream ends). */
  async follow(fn: (type: string, data: any) => boolean | void, signal?: AbortSignal): Promise<void> {
    const res = await fetch(`${this.login.url}/v1/events`, { headers: { authorization: `Bearer ${this.login.token}` }, signal });
    if (!res.ok || !res.body) throw new ApiError(res.status, `event stream: ${res.status}`);
    const reader = res.body.getReader();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += Buffer.from(value).toString('utf8');
      let end;
      while ((end = buf.indexOf('\n\n')) >= 0) {
        const frame = buf.slice(0, end);
        buf = buf.slice(end + 2);
        const type = /^event: (.*)$/m.exec(frame)?.[1];
        const data = /^data: (.*)$/m.exec(frame)?.[1];
        if (type && data && fn(type, JSON.parse(data))) {
          await reader.cancel();
          return;
        }
      }
    }
  }
}

export interface Common {
  url?: string;
  token?: string;
  json?: boolean;
}

/** A client for the login that the flags, the environment or `dozen login` give. */
export const client = async (o: Common): Promise<ApiClient> => new ApiClient(await resolveLogin(o));
/** The options every client command takes: where, as whom, and --json (raw API JSON, one document). */
export const common = (c: Command) => c.option('--url <url>', 'server URL').option('--token <token>', 'API token').option('--json', 'print JSON');

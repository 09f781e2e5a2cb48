import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig, type Config } from '../../src/config.js';
import { startServer, type RunningServer } from '../../src/server.js';

export interface LabServerOptions {
  /** The lab's subnet is 10.<net>.0.0/24 with the server on .1: give each test file its own. */
  net: number;
  /** Namespace name prefix (3 letters), made unique per run. */
  prefix: string;
  boards?: number;
  /** Any other configuration (storage, leases, lab.image, …). */
  extra?: Record<string, any>;
}

/** Configuration for a server with its own lab, boards powered off so consoles can attach first. */
export function labConfig(o: LabServerOptions): Config {
  const { lab, ...rest } = o.extra ?? {};
  return loadConfig(undefined, {
    dataDir: mkdtempSync(join(tmpdir(), `${o.prefix}-`)),
    api: '127.0.0.1:0',
    bootIp: `10.${o.net}.0.1`,
    subnet: `10.${o.net}.0.0/24`,
    lab: { enabled: true, boards: o.boards ?? 1, netns: `${o.prefix}-${randomBytes(3).toString('hex')}`, powerOn: false, ...lab },
    ...rest,
  });
}

export function startLabServer(o: LabServerOptions): Promise<RunningServer> {
  return startServer(labConfig(o));
}

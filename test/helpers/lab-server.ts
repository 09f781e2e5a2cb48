import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig, REPO_ROOT, type Config } from '../../src/config.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { freeControlPort, freePort } from '../storage/tgt-fixture.js';

export interface LabServerOptions {
  /** The lab's subnet is 10.<net>.0.0/24 with the server on .1: give each test file its own. */
  net: number;
  /** Namespace name prefix (3 letters), made unique per run. */
  prefix: string;
  boards?: number;
  /** Any other configuration (storage, leases, lab.image, …). */
  extra?: Record<string, any>;
}

/**
 * Builds an image the lab enrols its boards with (cached: a second build is a checksum pass). No test file
 * may count on another having built it first.
 */
export function buildLabImage(image: string): void {
  if (image === 'test' || image === 'debian-12') execFileSync('bash', [join(REPO_ROOT, `images/${image}/build.sh`)], { stdio: 'ignore', timeout: 1_800_000 });
}

/** Configuration for a server with its own lab, boards powered off so consoles can attach first. */
export function labConfig(o: LabServerOptions): Config {
  const { lab, ...rest } = o.extra ?? {};
  buildLabImage(lab?.image ?? 'test');
  return loadConfig(undefined, {
    dataDir: mkdtempSync(join(tmpdir(), `${o.prefix}-`)),
    api: '127.0.0.1:0',
    gateway: { listen: '127.0.0.1:0' },
    bootIp: `10.${o.net}.0.1`,
    subnet: `10.${o.net}.0.0/24`,
    lab: { enabled: true, boards: o.boards ?? 1, netns: `${o.prefix}-${randomBytes(3).toString('hex')}`, powerOn: false, ...lab },
    ...rest,
  });
}

export function startLabServer(o: LabServerOptions): Promise<RunningServer> {
  return startServer(labConfig(o));
}

/**
 * A lab whose leases boot the test image (or `image`) with iSCSI roots in `storageDir` (a btrfs loop fs), on subnet
 * `<prefix>.0/24` with the server on `.1`, boards powered off, the metadata port free on every address
 * (it binds the lab's boot IP) and our own tgtd on its own control port.
 */
export async function iscsiLabConfig(o: { dataDir: string; prefix: string; boards: number | string; netns: string; storageDir: string; osTimeoutMs: number; bootTimeoutMs?: number; image?: string }): Promise<Config> {
  buildLabImage(o.image ?? 'test');
  return loadConfig(undefined, {
    dataDir: o.dataDir,
    api: '127.0.0.1:0',
    gateway: { listen: '127.0.0.1:0' },
    bootIp: `${o.prefix}.1`,
    subnet: `${o.prefix}.0/24`,
    lab: { enabled: true, boards: o.boards, netns: o.netns, powerOn: false, image: o.image ?? 'test' },
    storage: { enabled: true, dir: o.storageDir, tgt: { controlPort: freeControlPort() } },
    metadata: { port: await freePort('0.0.0.0') },
    leases: { osTimeoutMs: o.osTimeoutMs, ...(o.bootTimeoutMs ? { bootTimeoutMs: o.bootTimeoutMs } : {}) },
  });
}

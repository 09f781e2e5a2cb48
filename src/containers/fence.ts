import type { ContainerHost } from './host.js';
import { ensureImage, type ContainerImageSource } from './images.js';

/** An address on the boot network that tenants' containers must not reach (the controller's services). */
export interface FenceTarget {
  ip: string;
  port: number;
}

/** What a board's probe found: `reached` lists the targets a tenant-like bridge got a TCP answer from. */
export interface FenceState {
  fenced: boolean;
  reached: string[];
  /** Why the board could not be checked (no probe image for its platform, the probe failed); null when checked. */
  error: string | null;
  checkedAt: string;
}

/**
 * The board's side of the fence between tenants' bridges and the boot network is the board's own
 * firewall (e.g. `iptables -I DOCKER-USER -d <boot subnet> -j DROP`, or the docker-host image's nft
 * rules): the Docker API has no per-network deny. So it is checked instead of trusted: a probe
 * container on a bridge made as a tenant's (outbound allowed, every capability dropped) tries a TCP
 * connection to each target. A board whose probe reaches one is not fenced.
 */
export const PROBE_NETWORK = 'dozen-fence-probe';

export async function probeFence(host: ContainerHost, images: ContainerImageSource[], targets: FenceTarget[], timeoutS = 2): Promise<FenceState> {
  const checkedAt = new Date().toISOString();
  const facts = await host.facts();
  const image = images.find((i) => facts.platforms.includes(i.platform));
  if (!image) return { fenced: false, reached: [], error: `no probe image for ${facts.platforms.join(', ')}`, checkedAt };
  await ensureImage(host, image.ref, images);
  await ensureProbeNetwork(host);
  // busybox nc (no -z): -w bounds the connect, `-e true` runs `true` once connected (exit 0), and a
  // refused or timed-out connect exits 1. One line per target that answered.
  const script = targets.map((t) => `nc -w ${timeoutS} ${t.ip} ${t.port} -e true 2>/dev/null && echo REACHED ${t.ip}:${t.port}`).join('; ') + '; echo PROBED';
  const container = await host.call('create the fence probe', (d) =>
    d.createContainer({
      Image: image.ref,
      Entrypoint: ['sh', '-c', script],
      Cmd: [],
      Tty: true,
      HostConfig: { NetworkMode: PROBE_NETWORK, CapDrop: ['ALL'], SecurityOpt: ['no-new-privileges:true'], Memory: 32 * 1024 * 1024 },
    }),
  );
  try {
    await host.call('start the fence probe', () => container.start());
    await host.call('wait for the fence probe', () => container.wait());
    const out = (await host.call('read the fence probe', () => container.logs({ stdout: true, stderr: true }))).toString();
    if (!out.includes('PROBED')) return { fenced: false, reached: [], error: `the probe did not finish: ${out.slice(-200).trim()}`, checkedAt };
    const reached = [...out.matchAll(/REACHED (\S+)/g)].map((m) => m[1]!);
    return { fenced: reached.length === 0, reached, error: null, checkedAt };
  } finally {
    await host.call('remove the fence probe', () => container.remove({ force: true })).catch(() => {});
  }
}

async function ensureProbeNetwork(host: ContainerHost): Promise<void> {
  const list = await host.call('list networks', (d) => d.listNetworks({ filters: { name: [PROBE_NETWORK] } }));
  if (list.some((n) => n.Name === PROBE_NETWORK)) return;
  await host
    .call(`create network ${PROBE_NETWORK}`, (d) =>
      // As a tenant's bridge with outbound allowed (network.ts), without the tenant label.
      d.createNetwork({ Name: PROBE_NETWORK, Driver: 'bridge', CheckDuplicate: true, Options: { 'com.docker.network.bridge.enable_icc': 'true' } }),
    )
    .catch(async (err) => {
      const again = await host.call('list networks', (d) => d.listNetworks({ filters: { name: [PROBE_NETWORK] } }));
      if (!again.some((n) => n.Name === PROBE_NETWORK)) throw err;
    });
}

/**
 * One probe per board at a time, its answer kept: a fenced board for `maxAgeMs`, an unfenced or
 * unchecked one for `retryMs` only, so an operator's fix (or an engine back from a blip) counts soon.
 */
export class FenceChecks {
  /** By board id; `host` is the engine it was probed through: a board that left the pool and came back (a new boot) is probed again. */
  private readonly cache = new Map<string, { host: ContainerHost; at: number; state: Promise<FenceState>; fenced?: boolean }>();

  constructor(
    private readonly images: ContainerImageSource[],
    private readonly targets: FenceTarget[],
    private readonly maxAgeMs = 10 * 60_000,
    private readonly retryMs = 30_000,
  ) {}

  get enabled(): boolean {
    return this.targets.length > 0;
  }

  of(host: ContainerHost): Promise<FenceState> {
    const hit = this.cache.get(host.id);
    if (hit && hit.host === host && (hit.fenced === undefined || Date.now() - hit.at < (hit.fenced ? this.maxAgeMs : this.retryMs))) return hit.state;
    const entry: { host: ContainerHost; at: number; state: Promise<FenceState>; fenced?: boolean } = { host, at: Date.now(), state: Promise.resolve(null as never) };
    entry.state = probeFence(host, this.images, this.targets)
      .catch((err: Error) => ({ fenced: false, reached: [], error: err.message, checkedAt: new Date().toISOString() }))
      .then((st) => {
        entry.fenced = st.fenced;
        entry.at = Date.now();
        return st;
      });
    this.cache.set(host.id, entry);
    return entry.state;
  }
}

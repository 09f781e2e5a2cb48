import { ContainerHost, type ContainerHostConfig } from './host.js';

export type ContainerHostFactory = (config: ContainerHostConfig) => ContainerHost;

/**
 * Every kind of container host, by transport (contract: test/containers/host.contract.test.ts runs each one).
 *   unix     an engine's unix socket on this machine (`socketPath`)
 *   tcp-tls  a board's engine over TCP with TLS and a client certificate (`host`, `port`, `ca`, `cert`, `key`)
 * Both are Docker engines driven through dockerode: one class, which takes its modem options from the same
 * fields (host.ts); the kinds differ in how the engine is reached and named, not in what the driver can ask.
 */
export const CONTAINER_HOSTS = {
  unix: (config) => new ContainerHost(config),
  'tcp-tls': (config) => new ContainerHost(config),
} satisfies Record<string, ContainerHostFactory>;

export type ContainerHostKind = keyof typeof CONTAINER_HOSTS;

/** The field whose presence makes a config of each kind (exactly one of them may be given). */
const SELECTED_BY: Record<ContainerHostKind, 'socketPath' | 'host'> = { unix: 'socketPath', 'tcp-tls': 'host' };

/** The kind a config's shape names: `unix` with `socketPath`, `tcp-tls` with `host`; null with neither or both. */
export function containerHostKind(config: Pick<ContainerHostConfig, 'socketPath' | 'host'>): ContainerHostKind | null {
  const kinds = (Object.keys(CONTAINER_HOSTS) as ContainerHostKind[]).filter((k) => Boolean(config[SELECTED_BY[k]]));
  return kinds.length === 1 ? kinds[0]! : null;
}

/** A shared board's engine, made by the kind its config's shape names; a config of no kind fails with the known ones. */
export function containerHost(config: ContainerHostConfig): ContainerHost {
  const kind = containerHostKind(config);
  const factory = kind !== null && Object.hasOwn(CONTAINER_HOSTS, kind) ? CONTAINER_HOSTS[kind] : undefined; // not "constructor" & co.
  if (!factory) {
    const known = (Object.keys(CONTAINER_HOSTS) as ContainerHostKind[]).map((k) => `${k} (${SELECTED_BY[k]})`).join(', ');
    throw new Error(`shared board ${config.id}: give exactly one of socketPath or host (known container host kinds: ${known})`);
  }
  return factory(config);
}

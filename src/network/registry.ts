import { z } from 'zod';
import { log as rootLog, type Logger } from '../log.js';
import { CommandNetwork } from './command.js';
import type { NetworkDriver } from './driver.js';
import { LinuxBridgeNetwork } from './linux-bridge.js';
import { NoNetwork } from './none.js';

/** `config.network`: `{ driver: 'linux-bridge' | 'command' | 'none', ...that driver's parameters }`. */
export type NetworkSpec = { driver: string } & Record<string, unknown>;

const port = z.number().int().min(1).max(65535);
const ifname = z.string().regex(/^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,14}$/, 'an interface name');
const netns = z.string().regex(/^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,63}$/, 'a netns name');

const services = z
  .object({
    dhcp: port.default(67),
    tftp: port.default(69),
    iscsi: port.default(3260),
    metadata: port.default(8775),
    api: port.optional(),
  })
  .prefault({});

export const linuxBridgeSpec = z.object({
  bridge: ifname,
  netns: netns.optional(),
  uplink: ifname,
  controllerIp: z.ipv4(),
  controllerIface: ifname.optional(),
  controllerNetns: netns.optional(),
  services,
  ipv6: z.boolean().default(false),
});

export const commandSpec = z.object({
  attach: z.string().min(1),
  detach: z.string().min(1),
  join: z.string().min(1),
  leave: z.string().min(1),
  start: z.string().min(1).optional(),
  stop: z.string().min(1).optional(),
  timeoutMs: z.number().int().positive().max(600_000).optional(),
  controllerIface: ifname.optional(),
  controllerNetns: netns.optional(),
  services,
});

/** Every network driver, by the name `config.network.driver` uses. */
export const NETWORK_DRIVERS: Record<string, (spec: NetworkSpec, log: Logger) => NetworkDriver> = {
  'linux-bridge': (spec, log) => new LinuxBridgeNetwork(linuxBridgeSpec.parse(spec), log),
  command: (spec) => new CommandNetwork(commandSpec.parse(spec)),
  none: (_spec, log) => {
    log.warn('network driver "none": board ports are NOT fenced — tenants can spoof MACs and IPs, answer DHCP and reach each other; use it only with one trusted tenant');
    return new NoNetwork();
  },
};

export function networkDriver(spec: NetworkSpec, log: Logger = rootLog): NetworkDriver {
  const factory = Object.hasOwn(NETWORK_DRIVERS, spec.driver) ? NETWORK_DRIVERS[spec.driver] : undefined; // not "constructor" & co.
  if (!factory) throw new Error(`unknown network driver "${spec.driver}" (known: ${Object.keys(NETWORK_DRIVERS).join(', ')})`);
  try {
    return factory(spec, log);
  } catch (err) {
    if (err instanceof z.ZodError) throw new Error(`bad parameters for network driver "${spec.driver}": ${z.prettifyError(err)}`);
    throw err;
  }
}

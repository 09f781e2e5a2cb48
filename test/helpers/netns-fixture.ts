/**
 * A throw-away two-ended test network: a veth pair whose root-namespace end carries the server
 * address and whose peer lives in a fresh client namespace. Names and the /24 are random per
 * call so parallel test files (and a crashed earlier run) don't collide.
 */
import { randomInt } from 'node:crypto';
import { addVethPair, createNetns, deleteLink, deleteNetns, ip, linkUp, randomName, setAddr, setMac } from '../../src/lab/netns.js';
import { until } from './until.js';

export interface VethLab {
  /** Client namespace. */
  ns: string;
  /** Root-namespace end (server side). */
  hostIf: string;
  /** Peer inside `ns`. */
  nsIf: string;
  /** e.g. 10.213.7.0/24 */
  subnet: string;
  /** e.g. 10.213.7 */
  prefix: string;
  /** .1 on hostIf */
  serverAddress: string;
  /** The peer's MAC (set explicitly, so tests know it up front). */
  mac: string;
  cleanup(): Promise<void>;
}

/** Picks a 10.A.B.0/24 (A in 200..254) that no route on this host already covers. */
async function freeSubnetPrefix(): Promise<string> {
  const routes = await ip(['-4', 'route', 'show', 'table', 'all']);
  for (let i = 0; i < 100; i++) {
    const prefix = `10.${randomInt(200, 255)}.${randomInt(0, 256)}`;
    if (!routes.includes(`${prefix}.`)) return prefix;
  }
  throw new Error('no free 10.200-254.x.0/24 subnet found');
}

export async function createVethLab(opts: { mac: string; clientAddress?: boolean }): Promise<VethLab> {
  const id = randomName('dzt', 8).slice(4);
  const ns = `dzt-${id}`;
  const hostIf = `dzh${id}`;
  const nsIf = `dzc${id}`;
  const prefix = await freeSubnetPrefix();
  const lab: VethLab = {
    ns,
    hostIf,
    nsIf,
    subnet: `${prefix}.0/24`,
    prefix,
    serverAddress: `${prefix}.1`,
    mac: opts.mac,
    cleanup: async () => {
      await deleteNetns(ns);
      await deleteLink(hostIf);
    },
  };
  try {
    await createNetns(ns);
    await addVethPair(hostIf, nsIf, { peerNetns: ns });
    await setMac(nsIf, opts.mac, ns);
    await setAddr(hostIf, `${lab.serverAddress}/24`);
    if (opts.clientAddress) await setAddr(nsIf, `${prefix}.2/24`, ns);
    await linkUp(hostIf);
    await linkUp(nsIf, ns);
    await waitForCarrier(hostIf);
    return lab;
  } catch (err) {
    await lab.cleanup().catch(() => {});
    throw err;
  }
}

/** Addresses on a fresh veth are "tentative"-free for IPv4, but the link needs a moment to report LOWER_UP. */
async function waitForCarrier(ifname: string): Promise<void> {
  let link = '';
  await until(`${ifname} up (LOWER_UP)`, async () => (link = await ip(['-br', 'link', 'show', 'dev', ifname])).includes('LOWER_UP'), {
    timeoutMs: 2500,
    intervalMs: 50,
    detail: () => link.trim(),
  });
}

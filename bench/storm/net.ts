/**
 * The storm's network: a veth pair, its host end carrying the servers' address (10.98.0.1/22) in the
 * root namespace, its peer in a namespace of our own carrying the relay (10.98.0.2/22) and every board's
 * address (/32 each, added in one `ip -batch`). Each board address gets a permanent neighbour entry on
 * the host end (all boards share the peer's MAC): 1,000 resolving entries would pass the kernel's
 * gc_thresh3 (1024) and the servers' replies would be dropped as "neighbour table overflow"; permanent
 * entries are not counted, and go with the link. Nothing outside these two interfaces is touched.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { addVethPair, createNetns, deleteLink, deleteNetns, getMac, ip, linkExists, linkUp, netnsExists, setAddr } from '../../src/lab/netns.js';
import { RELAY_IP, RELAY_IPS, SERVER_IP, STORM_PREFIX_LEN, type StormBoard } from './plan.js';

export interface StormNet {
  ns: string;
  hostIf: string;
  nsIf: string;
  cleanup(): Promise<void>;
}

/** `ip -batch -` with lines on stdin (one process for a thousand commands). */
function ipBatch(lines: string[], netns?: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const args = [...(netns ? ['-n', netns] : []), '-batch', '-'];
    const p = spawn('ip', args, { stdio: ['pipe', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d) => (err += d));
    const t = setTimeout(() => p.kill('SIGKILL'), 60_000);
    p.on('error', reject);
    p.on('close', (code) => {
      clearTimeout(t);
      if (code === 0) resolve();
      else reject(new Error(`ip ${args.join(' ')} (${lines.length} lines): exit ${code}: ${err.trim().slice(0, 500)}`));
    });
    p.stdin.end(lines.join('\n') + '\n');
  });
}

/**
 * Our own leftovers from a killed run: a `dzw-` namespace (no test or other benchmark uses that prefix)
 * that holds the relay's address, and its host link with the server's. Nothing else: a live test lab
 * has a name of the same shape (`dz?-<hex>`), and deleting it would kill that run's boards.
 */
export async function removeStaleStormNets(): Promise<void> {
  const links = await ip(['-o', '-4', 'addr', 'show']);
  for (const m of links.matchAll(/^\d+:\s+(dzwh[0-9a-f]{6})\s+inet 10\.98\.0\.1\//gm)) await deleteLink(m[1]!).catch(() => {});
  const nss = await ip(['netns', 'list']).catch(() => '');
  for (const m of nss.matchAll(/^(dzw-[0-9a-f]{6})\b/gm)) {
    const addrs = await ip(['-n', m[1]!, '-o', '-4', 'addr', 'show']).catch(() => '');
    if (addrs.includes(` inet ${RELAY_IP}/`)) await deleteNetns(m[1]!, { killProcesses: true }).catch(() => {});
  }
}

export async function createStormNet(boards: StormBoard[]): Promise<StormNet> {
  const id = randomBytes(3).toString('hex');
  const net: StormNet = {
    ns: `dzw-${id}`,
    hostIf: `dzwh${id}`,
    nsIf: `dzwc${id}`,
    cleanup: async () => {
      if (netnsExists(net.ns)) await deleteNetns(net.ns, { killProcesses: true }).catch(() => {});
      if (await linkExists(net.hostIf).catch(() => false)) await deleteLink(net.hostIf).catch(() => {});
    },
  };
  try {
    await createNetns(net.ns);
    await addVethPair(net.hostIf, net.nsIf, { peerNetns: net.ns });
    await setAddr(net.hostIf, `${SERVER_IP}/${STORM_PREFIX_LEN}`);
    for (const relay of RELAY_IPS) await setAddr(net.nsIf, `${relay}/${STORM_PREFIX_LEN}`, net.ns);
    await linkUp(net.hostIf);
    await linkUp(net.nsIf, net.ns);
    await linkUp('lo', net.ns);
    await ipBatch(boards.map((b) => `addr add ${b.ip}/32 dev ${net.nsIf}`), net.ns);
    const peerMac = await getMac(net.nsIf, net.ns);
    await ipBatch(boards.map((b) => `neigh replace ${b.ip} lladdr ${peerMac} dev ${net.hostIf} nud permanent`));
    // The link reports LOWER_UP a moment after it is set up.
    for (let i = 0; i < 50 && !(await ip(['-br', 'link', 'show', 'dev', net.hostIf])).includes('LOWER_UP'); i++) await new Promise((r) => setTimeout(r, 50));
    return net;
  } catch (err) {
    await net.cleanup();
    throw err;
  }
}

/**
 * Real DHCP clients in their own network namespaces, talking to the server over veth pairs.
 * Lab A holds the enrolled board, lab B an unknown one; both root-side veths carry addresses, so
 * B is also the "wrong interface" that must never see A's replies.
 *
 * Ports: Debian's busybox is built without FEATURE_UDHCP_PORT (`udhcpc -P` → "invalid option"),
 * so udhcpc needs 67/68; dhclient `-p N` listens on N and sends to N-1, so its server gets a port
 * checked to hold only its sockets (./udp-port.ts). Other tests may also bind 0.0.0.0:67
 * (reuseAddr) — assertions key on our random MACs only.
 * "Nothing arrived" is proved by a marker sent after, on the same path, that must arrive.
 */
import { randomInt } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import dgram from 'node:dgram';
import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DhcpServer, type DhcpEvent, type DhcpRequestInfo } from '../../src/boot/dhcp/server.js';
import { execInNetns, randomMac, runInNetns } from '../../src/lab/netns.js';
import { createVethLab, type VethLab } from '../helpers/netns-fixture.js';
import { requireRoot, requireTools } from '../helpers/tools.js';
import { onPrivatePort } from './udp-port.js';

const macA = randomMac();
const macB = randomMac();
let labA: VethLab;
let labB: VethLab;
let tmp: string;
const events: DhcpEvent[] = [];
const servers: DhcpServer[] = [];
let dhclientPort: number; // server port; dhclient uses +1

function reservedIp(): string {
  return `${labA.prefix}.77`;
}

async function startServer(port: number): Promise<DhcpServer> {
  const s = new DhcpServer({
    serverAddress: labA.serverAddress,
    port,
    subnet: labA.subnet,
    router: labA.serverAddress,
    dns: [labA.serverAddress],
    domain: 'lab.dozen',
    leaseSeconds: 900,
    lookup: async (info: DhcpRequestInfo) =>
      info.mac === macA ? { ip: reservedIp(), hostname: 'board-a', bootFile: 'boards/a/boot.scr', nextServer: labA.serverAddress } : null,
    onEvent: (ev) => events.push(ev),
  });
  await s.start();
  servers.push(s);
  return s;
}

/** Writes an executable hook that appends `header` plus selected env vars to `out`, always exiting 0. */
function hookScript(name: string, out: string, header: string, envPattern: string): string {
  const path = join(tmp, name);
  writeFileSync(path, `#!/bin/sh\n{ echo "${header}"; env | grep -E '${envPattern}' | sort; } >> '${out}'\nexit 0\n`);
  chmodSync(path, 0o755);
  return path;
}

function parseEnvDump(text: string, marker: string): Record<string, string> {
  const block = text.split(/^(?=EVENT=|reason=)/m).find((b) => b.startsWith(marker)) ?? '';
  return Object.fromEntries(block.split('\n').filter((l) => l.includes('=')).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
}

/**
 * A UDP listener inside a namespace (a plain node process), printing one line per datagram.
 * Resolves once it is bound.
 */
async function listenIn(ns: string, port: number): Promise<{ proc: ChildProcess; lines: string[]; payloads: () => string[]; heard: (payload: string) => Promise<void> }> {
  const js = `const s=require('dgram').createSocket({type:'udp4',reuseAddr:true});
s.on('message',(b,r)=>console.log(JSON.stringify({from:r.address,len:b.length,xid:b.length>8?b.readUInt32BE(4):-1,chaddr:b.subarray(28,34).toString('hex'),payload:b.subarray(0,16).toString()})));
s.bind(${port},'0.0.0.0',()=>console.log('ready'));setTimeout(()=>process.exit(0),60000);`;
  const proc = execInNetns(ns, process.execPath, ['-e', js]);
  const lines: string[] = [];
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`listener in ${ns} did not start`)), 10_000);
    proc.stdout!.on('data', (d: Buffer) => {
      for (const l of d.toString().split('\n').filter(Boolean)) {
        if (l === 'ready') (clearTimeout(t), resolve());
        else lines.push(l);
      }
    });
    proc.on('exit', () => reject(new Error(`listener in ${ns} exited`)));
  });
  const payloads = (): string[] => lines.map((l) => (JSON.parse(l) as { payload: string }).payload);
  /** Resolves once a datagram starting with `payload` arrived; fails after a generous 10 s. */
  const heard = (payload: string): Promise<void> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        if (!payloads().some((x) => x.startsWith(payload))) return;
        clearTimeout(t);
        proc.stdout!.off('data', check);
        resolve();
      };
      const t = setTimeout(() => reject(new Error(`listener in ${ns} never heard ${payload}: ${lines.join(' | ')}`)), 10_000);
      proc.stdout!.on('data', check); // runs after the listener above has recorded the lines
      check();
    });
  return { proc, lines, payloads, heard };
}

/** One limited broadcast (16 bytes, padded with dots) from a socket bound to `src`. */
async function broadcastFrom(src: string, port: number, tag: string): Promise<void> {
  const s = dgram.createSocket({ type: 'udp4', reuseAddr: true });
  await new Promise<void>((r) => s.bind({ address: src, port: 0 }, r));
  s.setBroadcast(true);
  await new Promise<void>((r, j) => s.send(Buffer.from(tag.padEnd(16, '.')), port, '255.255.255.255', (e) => (e ? j(e) : r())));
  s.close();
}

function stop(proc: ChildProcess): Promise<void> {
  return new Promise((r) => {
    if (proc.exitCode !== null || proc.signalCode !== null) return r();
    proc.once('exit', () => r());
    proc.kill('SIGKILL');
  });
}

beforeAll(async () => {
  requireRoot();
  requireTools('ip', 'udhcpc', 'dhclient');
  tmp = mkdtempSync(join(tmpdir(), 'dzt-dhcp-'));
  labA = await createVethLab({ mac: macA });
  labB = await createVethLab({ mac: macB });
  await startServer(67);
  // its two sockets (lab A's address + 0.0.0.0), alone on their port
  ({ port: dhclientPort } = await onPrivatePort(2, startServer, async (s) => {
    servers.splice(servers.indexOf(s), 1);
    await s.stop();
  }));
});

afterAll(async () => {
  await Promise.all(servers.map((s) => s.stop()));
  await labA?.cleanup();
  await labB?.cleanup();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

describe('dhcp server with real clients in network namespaces', () => {
  it('limited broadcasts from a socket bound to an address leave through that address’s interface only', async () => {
    const port = randomInt(20000, 60000);
    const a = await listenIn(labA.ns, port);
    const b = await listenIn(labB.ns, port);
    try {
      await broadcastFrom(labA.serverAddress, port, 'via-A');
      await broadcastFrom(labB.serverAddress, port, 'via-B');
      // Markers sent after, each on its own link: once they arrive, a stray copy of the other
      // link's broadcast would have arrived too.
      await broadcastFrom(labA.serverAddress, port, 'end-A');
      await broadcastFrom(labB.serverAddress, port, 'end-B');
      await Promise.all([a.heard('end-A'), b.heard('end-B')]);
      expect(a.payloads()).toEqual(['via-A...........', 'end-A...........']);
      expect(b.payloads()).toEqual(['via-B...........', 'end-B...........']);
    } finally {
      await stop(a.proc);
      await stop(b.proc);
    }
  });

  it('udhcpc (ports 67/68) gets the reserved address and boot options; the other link hears nothing', async () => {
    const out = join(tmp, 'udhcpc.out');
    const script = hookScript('udhcpc.sh', out, 'EVENT=$1', '^(ip|subnet|mask|router|dns|domain|hostname|broadcast|boot_file|siaddr|sname|serverid|lease|tftp|bootfile)=');
    const spy = await listenIn(labB.ns, 68); // the unrelated link: must not see A's OFFER/ACK
    try {
      const r = await runInNetns(labA.ns, 'udhcpc', ['-i', labA.nsIf, '-f', '-q', '-n', '-t', '4', '-T', '1', '-s', script, '-O', 'tftp', '-O', 'bootfile'], { timeoutMs: 20_000 });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toContain(`lease of ${reservedIp()} obtained from ${labA.serverAddress}`);
      const env = parseEnvDump(readFileSync(out, 'utf8'), 'EVENT=bound');
      expect(env).toMatchObject({
        ip: reservedIp(),
        subnet: '255.255.255.0',
        mask: '24',
        router: labA.serverAddress,
        dns: labA.serverAddress,
        domain: 'lab.dozen',
        hostname: 'board-a',
        broadcast: `${labA.prefix}.255`,
        serverid: labA.serverAddress,
        lease: '900',
        siaddr: labA.serverAddress,
        sname: labA.serverAddress,
        boot_file: 'boards/a/boot.scr',
        tftp: labA.serverAddress,
        bootfile: 'boards/a/boot.scr',
      });
      const mine = events.filter((e) => e.mac === macA).map((e) => e.type);
      expect(mine).toEqual(['offer', 'ack']);
      // A marker broadcast on link B after the server's replies: once the spy hears it, a
      // reply that leaked onto B would have been heard first.
      await broadcastFrom(labB.serverAddress, 68, 'end-B');
      await spy.heard('end-B');
      expect(spy.lines.filter((l) => l.includes(macA.replaceAll(':', '')))).toEqual([]);
    } finally {
      await stop(spy.proc);
    }
  });

  it('dhclient (-p N+1 → a server on a private port N) gets the reserved address and boot options', async () => {
    const out = join(tmp, 'dhclient.out');
    const script = hookScript('dhclient.sh', out, 'reason=$reason', '^new_');
    const conf = join(tmp, 'dhclient.conf');
    writeFileSync(conf, 'timeout 20;\nrequest subnet-mask, broadcast-address, routers, domain-name, domain-name-servers, host-name, tftp-server-name, bootfile-name;\n');
    const before = events.length;
    const args = ['-d', '-1', '-v', '-p', String(dhclientPort + 1), '-cf', conf, '-sf', script, '-lf', join(tmp, 'dhclient.leases'), '-pf', join(tmp, 'dhclient.pid'), labA.nsIf];
    const proc = execInNetns(labA.ns, 'dhclient', args); // -d: stays in the foreground after binding, we stop it
    let stderr = '';
    try {
      // dhclient -v logs "bound to <ip>" once the BOUND hook has run; wait for that (or its exit).
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 25_000);
        const done = (): void => (clearTimeout(t), resolve());
        proc.stderr!.on('data', (d: Buffer) => {
          stderr += d.toString();
          if (/bound to /.test(stderr)) done();
        });
        proc.once('exit', done);
      });
      const env = parseEnvDump(readFileSync(out, 'utf8'), 'reason=BOUND');
      expect(env, stderr).toMatchObject({
        new_ip_address: reservedIp(),
        new_subnet_mask: '255.255.255.0',
        new_routers: labA.serverAddress,
        new_domain_name_servers: labA.serverAddress,
        new_domain_name: 'lab.dozen',
        new_host_name: 'board-a',
        new_broadcast_address: `${labA.prefix}.255`,
        new_dhcp_server_identifier: labA.serverAddress,
        new_dhcp_lease_time: '900',
        new_next_server: labA.serverAddress,
        new_filename: 'boards/a/boot.scr',
        new_server_name: labA.serverAddress,
        new_tftp_server_name: labA.serverAddress,
        new_bootfile_name: 'boards/a/boot.scr',
      });
      expect(stderr).toContain(`port ${dhclientPort}`);
      expect(events.slice(before).filter((e) => e.mac === macA).map((e) => e.type)).toEqual(['offer', 'ack']);
    } finally {
      await stop(proc);
    }
  });

  it('does not answer an unknown MAC: udhcpc gives up and an "unknown" event names it', async () => {
    const script = hookScript('udhcpc-b.sh', join(tmp, 'udhcpc-b.out'), 'EVENT=$1', '^ip=');
    const r = await runInNetns(labB.ns, 'udhcpc', ['-i', labB.nsIf, '-f', '-q', '-n', '-t', '2', '-T', '1', '-A', '1', '-s', script], { timeoutMs: 15_000 });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('no lease, failing');
    const mine = events.filter((e) => e.mac === macB);
    expect(mine.length).toBeGreaterThanOrEqual(2); // one per DISCOVER it sent
    expect(mine.every((e) => e.type === 'unknown')).toBe(true);
    expect(mine[0]!.info).toMatchObject({ mac: macB, msgType: 1, giaddr: '0.0.0.0' });
    expect(readFileSync(join(tmp, 'udhcpc-b.out'), 'utf8')).not.toContain('EVENT=bound');
  });
});

import { execFile } from 'node:child_process';
import { copyFile, mkdir, readFile, rm, stat, symlink, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { log } from '../log.js';
import { controllerTable } from '../network/nft-ruleset.js';
import { qmp } from '../power/qmp.js';
import { inSubnet, intToIp, ipToInt, parseCidr } from '../util/net.js';
import { addBridge, addTap, addVethPair, createNetns, deleteLink, deleteNetns, ip, linkExists, netnsExists, linkUp, setAddr, setMaster } from './netns.js';
import { findModel } from '../inventory/models.js';
import type { Arch } from '../store/schema.js';
import { LAB_KINDS, parseLabBoards } from './kinds.js';
import { assertLabReady } from './preflight.js';

const execFileP = promisify(execFile);

export interface LabOptions {
  netns: string;
  /** The boot server's address; it lives on the host end of the lab's veth. */
  bootIp: string;
  subnet: string;
  /** How many boards of which kind: a number (that many QEMU virt ARMv7 boards) or `virt:2,bpim2u:2,arm64:1`. */
  boards: number | string;
  memoryMb: number;
  /** Pid files, QMP sockets and serial links live here. */
  stateDir: string;
}

export interface LabBoard {
  id: string;
  /** Its kind (src/lab/kinds.ts) and the model and arch it is enrolled as. */
  kind: string;
  model: string;
  arch: Arch;
  kernelArgs?: string;
  mac: string;
  ip: string;
  /** A stable symlink to the board's serial pty (the pty itself changes with every QEMU start). */
  serial: string;
  qmp: string;
  /** The board's own firmware (U-Boot image loaded at QEMU start, or its SD card): verified and restored at every release. */
  firmware: string;
  /** The known-good copy of it. */
  golden: string;
  /** Its tap: the bridge port the network driver fences. */
  port: string;
}

/**
 * The virtual lab: a network namespace holding a bridge, one tap per board, and QEMU `virt` ARMv7
 * boards running Debian's real U-Boot. A veth joins the bridge to the host, where the boot servers
 * listen on `bootIp`. Boards start powered off (paused); QEMU processes outlive the server, as real
 * boards would, and are adopted again on the next start.
 */
export class Lab {
  readonly hostIf: string;
  /** True when up() made the namespace (rather than adopting a running lab). */
  created = false;
  constructor(readonly o: LabOptions) {
    this.hostIf = `${o.netns.slice(0, 12)}-h`;
  }

  boards(): LabBoard[] {
    const subnet = parseCidr(this.o.subnet);
    // MACs from the subnet's 2nd and 3rd octets: two labs never share a subnet (up() refuses a taken
    // one), so they never share MACs either, and a lab keeps its MACs across restarts.
    const net = ipToInt(subnet.network);
    const hex = (n: number) => (n & 0xff).toString(16).padStart(2, '0');
    return parseLabBoards(this.o.boards).map((kind, i) => {
      const id = `lab-${i + 1}`;
      const mac = ['52', '54', '00', hex(net >>> 16), hex(net >>> 8), hex(i + 1)].join(':');
      const model = findModel(kind.model)!;
      return {
        id,
        kind: kind.name,
        model: model.id,
        arch: model.arch,
        ...(kind.kernelArgs ? { kernelArgs: kind.kernelArgs } : {}),
        mac,
        ip: intToIp(ipToInt(subnet.network) + 100 + i + 1),
        serial: join(this.o.stateDir, `${id}.tty`),
        qmp: join(this.o.stateDir, `${id}.qmp`),
        firmware: join(this.o.stateDir, kind.firmwareFile(id)),
        golden: kind.golden(this.o.stateDir, id),
        port: `tap${i + 1}`,
      };
    });
  }

  async up(): Promise<LabBoard[]> {
    const kinds = parseLabBoards(this.o.boards);
    assertLabReady(kinds);
    const { netns } = this.o;
    this.created = !netnsExists(netns);
    if (this.created) await this.assertSubnetFree();
    await mkdir(this.o.stateDir, { recursive: true });
    await createNetns(netns);
    // Nothing may reach a board unasked: the emulated sunxi GMAC (QEMU 10) stops receiving for good when a
    // frame arrives while U-Boot's receiver is off. So no IPv6 chatter (router solicitations, MLD) on the
    // lab's links, and pinned neighbours below (no ARP broadcasts from the controller).
    await execFileP('ip', ['netns', 'exec', netns, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
    await addBridge('br0', netns);
    await linkUp('br0', netns);
    if (!(await linkExists(this.hostIf))) await addVethPair(this.hostIf, 'uplink', { peerNetns: netns });
    await setMaster('uplink', 'br0', netns);
    // The veth end was made in the host's namespace, before the sysctl defaults above applied to it.
    await execFileP('ip', ['netns', 'exec', netns, 'sysctl', '-qw', 'net.ipv6.conf.uplink.disable_ipv6=1', 'net.ipv6.conf.br0.disable_ipv6=1']);
    await linkUp('uplink', netns);
    await execFileP('sysctl', ['-qw', `net.ipv6.conf.${this.hostIf}.disable_ipv6=1`]);
    await setAddr(this.hostIf, `${this.o.bootIp}/${parseCidr(this.o.subnet).prefix}`);
    await linkUp(this.hostIf);
    const boards = this.boards();
    for (const b of boards) {
      // The controller knows each board's MAC: it never asks (ARP) and never learns one from a tenant.
      await ip(['neigh', 'replace', b.ip, 'lladdr', b.mac, 'nud', 'permanent', 'dev', this.hostIf]);
      await this.startBoard(b, b.port);
    }
    return boards;
  }

  /**
   * Another interface already on the lab's subnet (a second lab, a leftover of a crashed run) would
   * take the replies meant for our boards: refuse, naming it.
   */
  private async assertSubnetFree(): Promise<void> {
    const subnet = parseCidr(this.o.subnet);
    const links = JSON.parse(await ip(['-j', 'addr', 'show'])) as Array<{ ifname: string; addr_info?: Array<{ family: string; local: string; prefixlen: number }> }>;
    for (const l of links) {
      if (l.ifname === this.hostIf) continue;
      for (const a of l.addr_info ?? []) {
        if (a.family === 'inet' && (inSubnet(a.local, subnet) || a.local === subnet.network)) {
          throw new Error(`lab subnet ${this.o.subnet} is already on interface ${l.ifname} (${a.local}/${a.prefixlen}); choose another subnet or remove it (bin/dozen lab down)`);
        }
      }
    }
  }

  /**
   * Where the lab's boards are fenced (src/network linux-bridge): bridge br0 in the lab's namespace, the
   * veth `uplink` towards the host, and the controller's input filter on the host end of that veth.
   */
  networkSpec(): { bridge: string; netns: string; uplink: string; controllerIface: string } {
    return { bridge: 'br0', netns: this.o.netns, uplink: 'uplink', controllerIface: this.hostIf };
  }

  /** Stop every board and remove the namespace, the veth and the lab's state files. */
  async down(): Promise<void> {
    for (const b of this.boards()) {
      await qmp(b.qmp, [{ execute: 'quit' }], 2000).catch(() => {});
      const pid = await this.pid(b);
      if (pid) killQuietly(pid);
    }
    await deleteNetns(this.o.netns);
    await deleteLink(this.hostIf);
    // The controller's input filter on the lab's veth (the bridge table went with the namespace).
    await execFileP('nft', ['delete', 'table', 'inet', controllerTable(this.hostIf)]).catch(() => {});
    await rm(this.o.stateDir, { recursive: true, force: true });
  }

  private async pid(b: LabBoard): Promise<number | null> {
    const text = await readFile(`${b.qmp}.pid`, 'utf8').catch(() => '');
    const pid = Number(text.trim());
    if (!pid) return null;
    try {
      process.kill(pid, 0);
      return pid;
    } catch {
      return null;
    }
  }

  /** Start a board's QEMU (paused) unless one is already running and answers QMP. */
  private async startBoard(b: LabBoard, tap: string): Promise<void> {
    const { netns } = this.o;
    await addTap(tap, netns);
    await setMaster(tap, 'br0', netns);
    await linkUp(tap, netns);
    const pid = await this.pid(b);
    const running = pid && (await qmp(b.qmp, [{ execute: 'query-status' }], 2000).then(() => true, () => false));
    // What kind of board that QEMU is (labs from before kinds ran only virt boards).
    const runningKind = running ? ((await readFile(`${b.qmp}.kind`, 'utf8').catch(() => 'virt')).trim()) : null;
    if (running && runningKind === b.kind) {
      log.info({ board: b.id }, 'lab: adopted running QEMU board');
    } else {
      if (running && pid) {
        // The lab's mix changed under a running lab: that QEMU is another machine now.
        log.info({ board: b.id, was: runningKind, now: b.kind }, 'lab: replacing a running QEMU board of another kind');
        await qmp(b.qmp, [{ execute: 'quit' }], 2000).catch(() => {});
        killQuietly(pid);
        // Its tap is free only once it is gone.
        for (let i = 0; i < 100 && isAlive(pid); i++) await new Promise((r) => setTimeout(r, 50));
        await rm(b.firmware, { force: true }); // its firmware belonged to the old kind
      }
      await unlink(b.qmp).catch(() => {});
      const kind = LAB_KINDS[b.kind]!;
      const files = { id: b.id, mac: b.mac, tap, firmware: b.firmware, golden: b.golden };
      await kind.makeGolden?.(files);
      if (!(await stat(b.firmware).catch(() => null))) await copyFile(b.golden, b.firmware);
      // prettier-ignore
      const args = [
        'netns', 'exec', netns, kind.qemu,
        ...kind.args(files, this.o.memoryMb),
        '-display', 'none', '-monitor', 'none', '-serial', 'pty',
        '-qmp', `unix:${b.qmp},server=on,wait=off`,
        '-name', `dozen-${b.id}`,
        '-S', '-daemonize', '-pidfile', `${b.qmp}.pid`,
      ];
      try {
        await execFileP('ip', args, { timeout: 30_000 });
      } catch (err) {
        throw new Error(`lab: QEMU for ${b.id} did not start: ${(err as { stderr?: string }).stderr?.trim() || (err as Error).message}`, { cause: err });
      }
      await writeFile(`${b.qmp}.kind`, b.kind);
      log.info({ board: b.id, mac: b.mac, kind: b.kind }, 'lab: started QEMU board (powered off)');
    }
    await this.linkSerial(b);
  }

  /** Point the board's stable serial path at its current pty, as QEMU reports it. */
  private async linkSerial(b: LabBoard): Promise<void> {
    const [chardevs] = (await qmp(b.qmp, [{ execute: 'query-chardev' }])) as Array<Array<{ label: string; filename: string }>>;
    const pty = chardevs?.find((c) => c.label === 'serial0')?.filename.replace(/^pty:/, '');
    if (!pty) throw new Error(`lab: ${b.id} has no serial pty`);
    await unlink(b.serial).catch(() => {});
    await symlink(pty, b.serial);
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* already gone */
  }
}


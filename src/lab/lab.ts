import { execFile } from 'node:child_process';
import { copyFile, mkdir, readFile, rm, stat, symlink, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { log } from '../log.js';
import { controllerTable } from '../network/nft-ruleset.js';
import { qmp } from '../power/qmp.js';
import { inSubnet, intToIp, ipToInt, parseCidr } from '../util/net.js';
import { addBridge, addTap, addVethPair, createNetns, deleteLink, deleteNetns, ip, linkExists, netnsExists, linkUp, setAddr, setMaster } from './netns.js';
import { UBOOT_BIN, assertLabReady } from './preflight.js';

const execFileP = promisify(execFile);

export interface LabOptions {
  netns: string;
  /** The boot server's address; it lives on the host end of the lab's veth. */
  bootIp: string;
  subnet: string;
  boards: number;
  memoryMb: number;
  /** Pid files, QMP sockets and serial links live here. */
  stateDir: string;
}

export interface LabBoard {
  id: string;
  mac: string;
  ip: string;
  /** A stable symlink to the board's serial pty (the pty itself changes with every QEMU start). */
  serial: string;
  qmp: string;
  /** The board's own U-Boot image, loaded at QEMU start: its firmware, verified and restored at every release. */
  firmware: string;
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
    return Array.from({ length: this.o.boards }, (_, i) => {
      const id = `lab-${i + 1}`;
      const mac = ['52', '54', '00', hex(net >>> 16), hex(net >>> 8), hex(i + 1)].join(':');
      return {
        id,
        mac,
        ip: intToIp(ipToInt(subnet.network) + 100 + i + 1),
        serial: join(this.o.stateDir, `${id}.tty`),
        qmp: join(this.o.stateDir, `${id}.qmp`),
        firmware: join(this.o.stateDir, `${id}.u-boot.bin`),
        port: `tap${i + 1}`,
      };
    });
  }

  async up(): Promise<LabBoard[]> {
    assertLabReady();
    const { netns } = this.o;
    this.created = !netnsExists(netns);
    if (this.created) await this.assertSubnetFree();
    await mkdir(this.o.stateDir, { recursive: true });
    await createNetns(netns);
    await addBridge('br0', netns);
    await linkUp('br0', netns);
    if (!(await linkExists(this.hostIf))) await addVethPair(this.hostIf, 'uplink', { peerNetns: netns });
    await setMaster('uplink', 'br0', netns);
    await linkUp('uplink', netns);
    await setAddr(this.hostIf, `${this.o.bootIp}/${parseCidr(this.o.subnet).prefix}`);
    await linkUp(this.hostIf);
    const boards = this.boards();
    for (const b of boards) await this.startBoard(b, b.port);
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
    if ((await this.pid(b)) && (await qmp(b.qmp, [{ execute: 'query-status' }], 2000).then(() => true, () => false))) {
      log.info({ board: b.id }, 'lab: adopted running QEMU board');
    } else {
      await unlink(b.qmp).catch(() => {});
      if (!(await stat(b.firmware).catch(() => null))) await copyFile(UBOOT_BIN, b.firmware);
      // prettier-ignore
      const args = [
        'netns', 'exec', netns, 'qemu-system-arm',
        '-M', 'virt', '-cpu', 'cortex-a15', '-m', String(this.o.memoryMb),
        '-bios', b.firmware,
        '-display', 'none', '-monitor', 'none', '-serial', 'pty',
        '-qmp', `unix:${b.qmp},server=on,wait=off`,
        '-netdev', `tap,id=n0,ifname=${tap},script=no,downscript=no`,
        '-device', `virtio-net-device,netdev=n0,mac=${b.mac}`,
        '-name', `dozen-${b.id}`,
        '-S', '-daemonize', '-pidfile', `${b.qmp}.pid`,
      ];
      try {
        await execFileP('ip', args, { timeout: 30_000 });
      } catch (err) {
        throw new Error(`lab: QEMU for ${b.id} did not start: ${(err as { stderr?: string }).stderr?.trim() || (err as Error).message}`, { cause: err });
      }
      log.info({ board: b.id, mac: b.mac }, 'lab: started QEMU board (powered off)');
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

function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* already gone */
  }
}


import type { Config } from '../config.js';
import type { Inventory } from '../inventory/boards.js';
import type { BoardEvents } from '../inventory/events.js';
import type { Lab, LabBoard } from '../lab/lab.js';
import { UBOOT_BIN } from '../lab/preflight.js';
import type { NetworkSpec } from '../network/registry.js';
import { powerDriver } from '../power/registry.js';

/** Lab boards are enrolled like real ones; their serial path and QMP socket are refreshed on every start. */
export async function enrollLabBoards(inventory: Inventory, boards: LabBoard[], image: string): Promise<void> {
  for (const b of boards) {
    const power = { driver: 'qemu', qmp: b.qmp };
    const firmware = { driver: 'file', path: b.firmware, golden: UBOOT_BIN };
    // By MAC, or by id for a lab board enrolled under an earlier MAC scheme.
    const existing = inventory.byMac(b.mac) ?? inventory.list().find((x) => x.id === b.id && x.model === 'qemu-virt');
    if (existing) {
      await inventory.patch(existing.id, { serial: b.serial, power, firmware, ip: b.ip, port: b.port, ...(existing.mac !== b.mac ? { mac: b.mac } : {}) });
    } else {
      await inventory.create({ id: b.id, mac: b.mac, model: 'qemu-virt', arch: 'armv7', ip: b.ip, serial: b.serial, port: b.port, power, firmware, image });
    }
  }
}

/** lab.powerOn: at start, the lab's enrolled boards that are off are switched on. */
export async function powerOnLabBoards(lab: Lab, inventory: Inventory, events: BoardEvents): Promise<void> {
  for (const b of lab.boards()) {
    const board = inventory.byMac(b.mac);
    if (!board) continue;
    const power = powerDriver(board.power, board.id);
    if ((await power.state()) !== 'on') {
      await power.on();
      events.add(board.id, { type: 'power', message: 'powered on (lab start)' });
    }
  }
}

/** config.network, or for the lab when none is given: its own bridge, fenced by linux-bridge. */
export function networkSpec(config: Config, lab: Lab | undefined, services: { dhcp: number; tftp: number; iscsi: number; metadata: number }): NetworkSpec {
  if (config.network) return config.network as NetworkSpec;
  if (!lab) throw new Error('config.network is required without the lab'); // configSchema says so first
  return { driver: 'linux-bridge', ...lab.networkSpec(), controllerIp: config.bootIp, services };
}

import type { Config } from '../config.js';
import type { Inventory } from '../inventory/boards.js';
import type { BoardEvents } from '../inventory/events.js';
import type { Lab, LabBoard } from '../lab/lab.js';
import { LAB_KINDS } from '../lab/kinds.js';
import { findModel } from '../inventory/models.js';
import type { NetworkSpec } from '../network/registry.js';
import { powerDriver } from '../power/registry.js';

/**
 * Lab boards are enrolled like real ones, as their kind's model; their serial path, QMP socket and
 * firmware are refreshed on every start. A board whose lab kind changed (another `--boards` mix) gets the
 * new model, arch and MAC: it is a different machine under the same id.
 */
export async function enrollLabBoards(inventory: Inventory, boards: LabBoard[], image: string): Promise<void> {
  for (const b of boards) {
    const power = { driver: 'qemu', qmp: b.qmp };
    // An SD card stays open in QEMU: restored in place (src/firmware/file.ts).
    const firmware = { driver: 'file', path: b.firmware, golden: b.golden, ...(b.kind === 'bpim2u' ? { inPlace: true } : {}) };
    const kernelArgs = b.kernelArgs;
    // By MAC, or by id for a lab board enrolled under an earlier MAC scheme or kind.
    const existing = inventory.byMac(b.mac) ?? inventory.list().find((x) => x.id === b.id && LAB_MODELS.has(findModel(x.model)?.id ?? ''));
    if (existing) {
      const same = existing.mac === b.mac && existing.model === b.model && existing.arch === b.arch;
      await inventory.patch(existing.id, {
        serial: b.serial, power, firmware, ip: b.ip, port: b.port, kernelArgs,
        ...(same ? {} : { mac: b.mac, model: b.model, arch: b.arch }),
      });
    } else {
      await inventory.create({ id: b.id, mac: b.mac, model: b.model, arch: b.arch, ip: b.ip, serial: b.serial, port: b.port, power, firmware, image, ...(kernelArgs ? { kernelArgs } : {}) });
    }
  }
}

/** The models lab boards are enrolled as. */
const LAB_MODELS = new Set(Object.values(LAB_KINDS).map((k) => k.model));

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

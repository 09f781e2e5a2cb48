import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);
const MAKE_SD = fileURLToPath(new URL('../../scripts/lab-sunxi/make-sd.sh', import.meta.url));

export const UBOOT_ARM = '/usr/lib/u-boot/qemu_arm/u-boot.bin';
export const UBOOT_ARM64 = '/usr/lib/u-boot/qemu_arm64/u-boot.bin';

/** One emulated board as its kind needs it started. */
export interface LabBoardFiles {
  id: string;
  mac: string;
  tap: string;
  /** The board's own boot firmware: a U-Boot image (-bios) or an SD card image with U-Boot on it. */
  firmware: string;
  /** Its known-good copy: what the firmware is verified against and restored from at every release. */
  golden: string;
}

/**
 * A kind of emulated board in the lab: which model it is enrolled as, and how QEMU runs it. The firmware
 * is real: Debian's U-Boot for QEMU `virt`, Debian's u-boot-sunxi on an SD card for the Banana Pi.
 */
export interface LabKind {
  name: string;
  /** The model it is enrolled as (src/inventory/models.ts). */
  model: string;
  qemu: string;
  /** Kernel arguments for boots on this emulation (kept on the board record, not the model: real boards need none). */
  kernelArgs?: string;
  /** Make the board's known-good firmware (idempotent); null: a file shipped by a package. */
  makeGolden?: (b: LabBoardFiles) => Promise<void>;
  /** The golden firmware for a board of this kind. */
  golden: (stateDir: string, id: string) => string;
  /** Its NIC model can wedge its receiver: the lab watches its DHCP and unwedges it (src/lab/unwedge.ts). */
  unwedge?: boolean;
  /** Firmware file name in the lab's state folder. */
  firmwareFile: (id: string) => string;
  /** QEMU arguments for the machine alone (CPU, memory, clocks): what a direct `-kernel` boot shares with the board. */
  machine: (memoryMb: number) => string[];
  /** QEMU arguments: machine, firmware, NIC (not serial, QMP, name, -S). */
  args: (b: LabBoardFiles, memoryMb: number) => string[];
  /** Debian packages and files it needs on the host, for the lab's preflight: [path or command, how to get it]. */
  needs: Array<[string, string]>;
}

/** A QEMU `virt` board: Debian's U-Boot for it as -bios (copied per board), a virtio NIC on its tap. */
function qemuVirt(name: string, model: string, qemu: string, cpu: string, uboot: string): LabKind {
  const machine = (mem: number) => ['-M', 'virt', '-cpu', cpu, '-m', String(mem)];
  return {
    name,
    model,
    qemu,
    golden: () => uboot,
    firmwareFile: (id) => `${id}.u-boot.bin`,
    machine,
    args: (b, mem) => [...machine(mem), '-bios', b.firmware, '-netdev', `tap,id=n0,ifname=${b.tap},script=no,downscript=no`, '-device', `virtio-net-device,netdev=n0,mac=${b.mac}`],
    needs: [
      [qemu, 'apt-get install qemu-system-arm'],
      [uboot, 'apt-get install u-boot-qemu'],
    ],
  };
}

export const LAB_KINDS: Record<string, LabKind> = {
  virt: qemuVirt('virt', 'qemu-virt-armv7', 'qemu-system-arm', 'cortex-a15', UBOOT_ARM),
  arm64: qemuVirt('arm64', 'qemu-virt-arm64', 'qemu-system-aarch64', 'cortex-a53', UBOOT_ARM64),
  bpim2u: {
    name: 'bpim2u',
    model: 'bananapi-m2u',
    qemu: 'qemu-system-arm',
    // Four TCG vCPUs cost ~50 s of TLB-flush stalls when dwmac-sun8i loads; -smp 1 is refused by the
    // machine, so the kernel is told to bring up one (/work/shared/BOARD-FACTS.md).
    kernelArgs: 'maxcpus=1',
    unwedge: true,
    // Per board: U-Boot's environment on the card carries the board's MAC (ethaddr).
    golden: (stateDir, id) => `${stateDir}/${id}.sd.golden.img`,
    firmwareFile: (id) => `${id}.sd.img`,
    makeGolden: async (b) => {
      try {
        await execFileP('bash', [MAKE_SD, b.golden, b.mac], { timeout: 300_000 });
      } catch (err) {
        throw new Error(`lab: the SD card of ${b.id} could not be made: ${(err as { stderr?: string }).stderr?.trim() || (err as Error).message}`, { cause: err });
      }
    },
    machine: (mem) => [
      '-M', 'bpim2u', '-m', String(Math.max(mem, 1024)), // the R40 board has 1 GiB
      // U-Boot programs CNTFRQ as the R40's 24 MHz; QEMU's counter would tick at 62.5 MHz and Linux's clock run 2.6x fast.
      '-global', 'driver=cortex-a7-arm-cpu,property=cntfrq,value=24000000',
    ],
    args: (b, mem) => [
      ...LAB_KINDS.bpim2u!.machine(mem),
      '-drive', `if=sd,format=raw,file=${b.firmware}`,
      '-nic', `tap,ifname=${b.tap},script=no,downscript=no,model=gmac,mac=${b.mac}`,
    ],
    needs: [
      ['qemu-system-arm', 'apt-get install -t bookworm-backports qemu-system-arm (QEMU 10 has -M bpim2u; scripts/setup-host.sh)'],
      ['mkenvimage', 'apt-get install u-boot-tools'],
      ['mcopy', 'apt-get install mtools'],
    ],
  },
};

/** `virt:2,bpim2u:2,arm64:1` (or a number: that many virt boards) → one kind per board, in order. */
export function parseLabBoards(spec: number | string): LabKind[] {
  if (typeof spec === 'number') return Array.from({ length: spec }, () => LAB_KINDS.virt!);
  const out: LabKind[] = [];
  for (const part of spec.split(',').map((p) => p.trim()).filter(Boolean)) {
    const m = /^([a-z0-9]+)(?::(\d+))?$/.exec(part);
    const kind = m && Object.hasOwn(LAB_KINDS, m[1]!) ? LAB_KINDS[m[1]!]! : undefined;
    if (!m || !kind) throw new Error(`lab boards: "${part}" is not <kind>[:<count>] with kind one of ${Object.keys(LAB_KINDS).join(', ')}`);
    for (let i = 0; i < Number(m[2] ?? 1); i++) out.push(kind);
  }
  if (out.length > 16) throw new Error(`lab boards: ${out.length} boards; the lab holds at most 16`);
  return out;
}

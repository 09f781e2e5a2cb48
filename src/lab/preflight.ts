import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';

export const UBOOT_BIN = '/usr/lib/u-boot/qemu_arm/u-boot.bin';

function have(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', 'command -v "$0"', cmd], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

export interface HostProbe {
  isRoot: () => boolean;
  hasCommand: (cmd: string) => boolean;
  exists: (path: string) => boolean;
}

const realHost: HostProbe = { isRoot: () => process.getuid?.() === 0, hasCommand: have, exists: existsSync };

/** Everything the virtual lab needs, each missing piece named with the way to get it. */
export function labProblems(host: HostProbe = realHost): string[] {
  const problems: string[] = [];
  if (!host.isRoot()) problems.push('the virtual lab needs root (network namespaces, bridges, tap devices): run as root or with sudo');
  if (!host.hasCommand('ip')) problems.push('`ip` is missing: apt-get install iproute2');
  if (!host.hasCommand('qemu-system-arm')) problems.push('`qemu-system-arm` is missing: apt-get install qemu-system-arm');
  if (!host.exists(UBOOT_BIN)) problems.push(`${UBOOT_BIN} is missing: apt-get install u-boot-qemu`);
  if (!host.exists('/dev/net/tun')) problems.push('/dev/net/tun is missing: load the tun module (modprobe tun)');
  return problems;
}

export function assertLabReady(): void {
  const p = labProblems();
  if (p.length) throw new Error(`cannot start the virtual lab:\n  - ${p.join('\n  - ')}\n(or run with --no-lab; \`bash scripts/setup-host.sh\` installs the packages)`);
}

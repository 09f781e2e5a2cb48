import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { LAB_KINDS, type LabKind } from './kinds.js';

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
  /** The machine types `qemu` knows (`-M help`). */
  machines: (qemu: string) => string[];
}

function machines(qemu: string): string[] {
  try {
    return execFileSync(qemu, ['-M', 'help'], { encoding: 'utf8', timeout: 10_000 }).split('\n').map((l) => l.split(/\s+/)[0]!).filter(Boolean);
  } catch {
    return [];
  }
}

const realHost: HostProbe = { isRoot: () => process.getuid?.() === 0, hasCommand: have, exists: existsSync, machines };

/** Everything the virtual lab's boards need, each missing piece named with the way to get it. */
export function labProblems(kinds: LabKind[] = [LAB_KINDS.virt!], host: HostProbe = realHost): string[] {
  const problems: string[] = [];
  if (!host.isRoot()) problems.push('the virtual lab needs root (network namespaces, bridges, tap devices): run as root or with sudo');
  if (!host.hasCommand('ip')) problems.push('`ip` is missing: apt-get install iproute2');
  if (!host.exists('/dev/net/tun')) problems.push('/dev/net/tun is missing: load the tun module (modprobe tun)');
  const seen = new Set<string>();
  for (const kind of kinds) {
    for (const [what, how] of kind.needs) {
      if (seen.has(what)) continue;
      seen.add(what);
      const ok = what.startsWith('/') ? host.exists(what) : host.hasCommand(what);
      if (!ok) problems.push(`${what.startsWith('/') ? what : `\`${what}\``} is missing (${kind.name} boards): ${how}`);
    }
  }
  if (kinds.some((k) => k.name === 'bpim2u') && host.hasCommand('qemu-system-arm') && !host.machines('qemu-system-arm').includes('bpim2u')) {
    problems.push('qemu-system-arm has no -M bpim2u (Banana Pi M2 Ultra; QEMU 9.1 or newer): apt-get install -t bookworm-backports qemu-system-arm (scripts/setup-host.sh does)');
  }
  return problems;
}

export function assertLabReady(kinds?: LabKind[]): void {
  const p = labProblems(kinds);
  if (p.length) throw new Error(`cannot start the virtual lab:\n  - ${p.join('\n  - ')}\n(or run with --no-lab; \`bash scripts/setup-host.sh\` installs the packages)`);
}

import { execFileSync } from 'node:child_process';

/**
 * Tests that need host tools call this first. A missing tool is a failure, never a skip:
 * the message names the tool and how to install it (`bash scripts/setup-host.sh`).
 */
export function requireTools(...tools: string[]): void {
  const missing = tools.filter((t) => {
    try {
      execFileSync('sh', ['-c', `command -v ${t}`], { stdio: 'ignore' });
      return false;
    } catch {
      return true;
    }
  });
  if (missing.length) {
    throw new Error(`missing host tools: ${missing.join(', ')} — run: sudo bash scripts/setup-host.sh`);
  }
}

export function requireRoot(): void {
  if (process.getuid?.() !== 0) throw new Error('this test needs root (network namespaces, tap devices)');
}

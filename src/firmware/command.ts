import { execFile } from 'node:child_process';
import type { FirmwareCheck, FirmwareDriver } from './driver.js';

/**
 * Operator commands for real boards: `verify` exits 0 when the firmware is the known-good one (e.g. read
 * the SPI flash back over the board's recovery path and compare), `restore` reflashes it. Errors carry
 * the command's stderr, never the command line (it may hold credentials).
 */
export class CommandFirmware implements FirmwareDriver {
  constructor(private readonly s: { verify: string; restore: string; timeoutMs?: number }) {}

  async verify(): Promise<FirmwareCheck> {
    const r = await this.run(this.s.verify);
    return { ok: r.code === 0, detail: r.out || `verify exited ${r.code}` };
  }

  async restore(): Promise<void> {
    const r = await this.run(this.s.restore);
    if (r.code !== 0) throw new Error(`firmware restore command exited ${r.code}: ${r.out}`);
    const after = await this.verify();
    if (!after.ok) throw new Error(`firmware still differs after restore: ${after.detail}`);
  }

  private run(cmd: string): Promise<{ code: number; out: string }> {
    const timeout = this.s.timeoutMs ?? 300_000;
    return new Promise((resolve) =>
      execFile('/bin/sh', ['-c', cmd], { timeout, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
        const e = err as (NodeJS.ErrnoException & { code?: number | string; killed?: boolean }) | null;
        const code = !e ? 0 : typeof e.code === 'number' ? e.code : -1;
        resolve({ code, out: (e?.killed ? `timed out after ${timeout} ms` : (stderr || stdout).trim()).slice(0, 500) });
      }),
    );
  }
}

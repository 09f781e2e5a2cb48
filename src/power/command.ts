import { execFile } from 'node:child_process';
import type { PowerDriver, PowerState } from './driver.js';

export interface CommandPowerSpec {
  /** Shell commands the operator configured (e.g. `snmpset … i 1`, `uhubctl -l 1-1 -p 2 -a on`). */
  on: string;
  off: string;
  /** Default: off, wait `cycleDelayMs`, on. */
  cycle?: string;
  /** Prints on/off (or 1/0, true/false); exit status 0. Without it the state is unknown. */
  state?: string;
  timeoutMs?: number;
  cycleDelayMs?: number;
}

/** Power through operator-configured commands: PoE ports via SNMP, USB hubs, relay boards. */
export class CommandPower implements PowerDriver {
  constructor(private readonly s: CommandPowerSpec) {}

  on = () => this.run(this.s.on, 'on').then(() => undefined);
  off = () => this.run(this.s.off, 'off').then(() => undefined);

  async cycle(): Promise<void> {
    if (this.s.cycle) {
      await this.run(this.s.cycle, 'cycle');
      return;
    }
    await this.off();
    await new Promise((r) => setTimeout(r, this.s.cycleDelayMs ?? 2000));
    await this.on();
  }

  async state(): Promise<PowerState> {
    if (!this.s.state) return 'unknown';
    const out = (await this.run(this.s.state, 'state')).trim().toLowerCase();
    if (/^(on|1|true|up)$/.test(out)) return 'on';
    if (/^(off|0|false|down)$/.test(out)) return 'off';
    return 'unknown';
  }

  private run(cmd: string, what: string): Promise<string> {
    const timeout = this.s.timeoutMs ?? 15_000;
    return new Promise((resolve, reject) => {
      execFile('/bin/sh', ['-c', cmd], { timeout, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
        if (!err) return resolve(stdout);
        const e = err as NodeJS.ErrnoException & { killed?: boolean; code?: number | string };
        const why = e.killed ? `timed out after ${timeout} ms` : `exited with ${e.code}`;
        reject(new Error(`power ${what} command ${why}: ${stderr.trim() || stdout.trim() || cmd}`, { cause: err }));
      });
    });
  }
}

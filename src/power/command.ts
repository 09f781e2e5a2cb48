import { runCommand } from '../exec/spawner.js';
import { abortReason, type PowerDriver, type PowerState } from './driver.js';

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

/** Output kept of a command (stdout and stderr each); more is dropped. */
const MAX_OUTPUT = 1024 * 1024;

/**
 * Power through operator-configured commands: PoE ports via SNMP, USB hubs, relay boards. Each command
 * runs in a process group of its own, so a timeout or an aborted action kills the shell and whatever it
 * started; the command helper starts them, so a burst of power actions never stalls the API.
 */
export class CommandPower implements PowerDriver {
  constructor(private readonly s: CommandPowerSpec) {}

  on = (signal?: AbortSignal) => this.run(this.s.on, 'on', signal).then(() => undefined);
  off = (signal?: AbortSignal) => this.run(this.s.off, 'off', signal).then(() => undefined);

  async cycle(signal?: AbortSignal): Promise<void> {
    if (this.s.cycle) {
      await this.run(this.s.cycle, 'cycle', signal);
      return;
    }
    await this.off(signal);
    await pause(this.s.cycleDelayMs ?? 2000, signal);
    await this.on(signal);
  }

  async state(): Promise<PowerState> {
    if (!this.s.state) return 'unknown';
    const out = (await this.run(this.s.state, 'state')).trim().toLowerCase();
    if (/^(on|1|true|up)$/.test(out)) return 'on';
    if (/^(off|0|false|down)$/.test(out)) return 'off';
    return 'unknown';
  }

  /** One command through the command helper (src/exec/spawner.ts): starting it never stalls the server. */
  private async run(cmd: string, what: string, signal?: AbortSignal): Promise<string> {
    const timeout = this.s.timeoutMs ?? 15_000;
    if (signal?.aborted) throw cancelled(what, signal);
    const r = await runCommand({ file: '/bin/sh', args: ['-c', cmd], timeoutMs: timeout, maxOutput: MAX_OUTPUT }, signal);
    if (r.error === 'aborted' && signal?.aborted) throw cancelled(what, signal);
    if (r.error) throw new Error(`power ${what} command could not start: ${r.error}`);
    if (r.timedOut) throw new Error(`power ${what} command timed out after ${timeout} ms: ${r.stderr.trim() || r.stdout.trim() || cmd}`);
    if (r.code === 0) return r.stdout;
    throw new Error(`power ${what} command exited with ${r.code ?? r.signal}: ${r.stderr.trim() || r.stdout.trim() || cmd}`);
  }
}

function cancelled(what: string, signal: AbortSignal, done = 'killed'): Error {
  return new Error(`power ${what} command cancelled (${abortReason(signal)}): ${done}`);
}

/** Wait `ms`, or reject as cancelled once the signal aborts. */
function pause(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const between = 'between power off and on';
    if (signal?.aborted) return reject(cancelled('cycle', signal, between));
    const onAbort = () => {
      clearTimeout(t);
      reject(cancelled('cycle', signal!, between));
    };
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

import { spawn } from 'node:child_process';
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
 * started.
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

  private run(cmd: string, what: string, signal?: AbortSignal): Promise<string> {
    const timeout = this.s.timeoutMs ?? 15_000;
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(cancelled(what, signal));
      const child = spawn('/bin/sh', ['-c', cmd], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (c: Buffer) => {
        if (stdout.length < MAX_OUTPUT) stdout += c.toString();
      });
      child.stderr.on('data', (c: Buffer) => {
        if (stderr.length < MAX_OUTPUT) stderr += c.toString();
      });
      let settled = false;
      const end = (err: Error | null, out = '') => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        if (err) reject(err);
        else resolve(out);
      };
      // The whole group: a shell that started other programs (a pipeline, `a; b`) leaves none behind.
      const kill = () => {
        try {
          process.kill(-child.pid!, 'SIGKILL');
        } catch {
          child.kill('SIGKILL'); // the group is gone already, or never was (spawn failed)
        }
      };
      // Killed is done: answer at once, not when the last holder of the command's output lets go.
      const timer = setTimeout(() => {
        kill();
        end(new Error(`power ${what} command timed out after ${timeout} ms: ${stderr.trim() || stdout.trim() || cmd}`));
      }, timeout);
      const onAbort = () => {
        kill();
        end(cancelled(what, signal!));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      child.on('error', (err) => end(new Error(`power ${what} command could not start: ${err.message}`, { cause: err })));
      child.on('close', (code, sig) => {
        if (code === 0) return end(null, stdout);
        end(new Error(`power ${what} command exited with ${code ?? sig}: ${stderr.trim() || stdout.trim() || cmd}`));
      });
    });
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

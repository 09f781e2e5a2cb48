import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { PowerDriver } from '../../src/power/driver.js';
import { manualDesk } from '../../src/power/manual.js';
import { powerDriver } from '../../src/power/registry.js';
import { UBOOT_ARM as UBOOT_BIN } from '../../src/lab/kinds.js';
import { requireTools } from '../helpers/tools.js';
import { until } from '../helpers/until.js';

// One contract, run against every power driver: on → on, off → off, cycle → on, and errors are clear.
const dir = mkdtempSync(join(tmpdir(), 'power-'));
const cleanups: Array<() => void> = [];
afterAll(() => cleanups.forEach((c) => c()));

type Action = 'on' | 'off' | 'cycle';

interface Harness {
  driver: PowerDriver;
  /** For drivers that wait for a person: play the operator, who does what the desk asks. */
  operator?: (expected: Action) => Promise<void>;
}

const harnesses: Record<string, () => Promise<Harness>> = {
  async qemu() {
    requireTools('qemu-system-arm');
    const qmp = join(dir, 'board.qmp');
    execFileSync('qemu-system-arm', ['-M', 'virt', '-m', '64', '-bios', UBOOT_BIN, '-display', 'none', '-monitor', 'none', '-serial', 'null', '-nic', 'none', '-qmp', `unix:${qmp},server=on,wait=off`, '-S', '-daemonize', '-pidfile', `${qmp}.pid`]);
    cleanups.push(() => {
      try {
        process.kill(Number(readFileSync(`${qmp}.pid`, 'utf8')), 'SIGKILL');
      } catch {
        /* gone */
      }
    });
    return { driver: powerDriver({ driver: 'qemu', qmp }, 'q1') };
  },
  async command() {
    // A stand-in relay: a file holding the port state, switched by shell commands as an operator would configure.
    const f = join(dir, 'relay');
    writeFileSync(f, 'off');
    return { driver: powerDriver({ driver: 'command', on: `echo on > ${f}`, off: `echo off > ${f}`, state: `cat ${f}`, cycleDelayMs: 10 }, 'c1') };
  },
  async manual() {
    const driver = powerDriver({ driver: 'manual' }, 'm1');
    // The operator waits for the desk to ask (never a fixed delay), checks what is asked, confirms it.
    const operator = async (expected: Action) => {
      await until(`the manual desk asked to switch m1 ${expected}`, () => manualDesk.waiting('m1').length > 0, { timeoutMs: 10_000, intervalMs: 5 });
      expect(manualDesk.waiting('m1').map((w) => w.action)).toEqual([expected]);
      expect(manualDesk.confirm('m1')).toBe(true);
    };
    return { driver, operator };
  },
};

for (const [name, make] of Object.entries(harnesses)) {
  describe(`power driver contract: ${name}`, () => {
    it('on, off and cycle change the reported state', async () => {
      const { driver, operator } = await make();
      const act = async (action: Action) => {
        const p = driver[action]();
        await operator?.(action);
        await p;
      };
      await act('on');
      expect(await driver.state()).toBe('on');
      await act('off');
      expect(await driver.state()).toBe('off');
      await act('cycle');
      expect(await driver.state()).toBe('on');
    });
  });
}

// The same contract for an action that hangs: once its signal aborts (a cancelled job, a step's timeout)
// it rejects promptly, saying it was cancelled, and leaves nothing behind. Drivers whose actions can hang:
// manual (no operator answers) and command (a stuck relay command); QEMU's are quick QMP calls and may
// ignore the signal.
const PROMPT_MS = 2000;
const hanging: Record<string, () => { driver: PowerDriver; asked: () => Promise<void>; leftBehind: () => Promise<void> }> = {
  manual() {
    const driver = powerDriver({ driver: 'manual' }, 'm2');
    return {
      driver,
      asked: async () => {
        await until('the manual desk asked to switch m2', () => manualDesk.waiting('m2').length > 0, { timeoutMs: 10_000, intervalMs: 5 });
      },
      // the operator's list no longer shows it, and a late confirmation finds nothing to complete
      leftBehind: async () => {
        expect(manualDesk.waiting('m2')).toEqual([]);
        expect(manualDesk.confirm('m2')).toBe(false);
      },
    };
  },
  command() {
    // `sleep 30` in the background of the shell: killing the shell alone would leave it running.
    const pidFile = join(dir, 'hung.pid');
    const hung = `sleep 30 & echo $! > ${pidFile}; wait`;
    const driver = powerDriver({ driver: 'command', on: hung, off: hung, cycle: hung, timeoutMs: 60_000 }, 'c2');
    let pid = 0;
    return {
      driver,
      asked: async () => {
        pid = await until('the hung command started (its pid file)', () => Number(readFileSync(pidFile, { encoding: 'utf8', flag: 'a+' }).trim()) || undefined, { timeoutMs: 10_000, intervalMs: 5 });
      },
      // the command's processes are killed (the whole group), not left to run out their 30 s
      leftBehind: async () => {
        await until(`the hung command's sleep (pid ${pid}) gone after its action was aborted`, () => !alive(pid), { timeoutMs: PROMPT_MS, intervalMs: 10 });
        writeFileSync(pidFile, '');
      },
    };
  },
};

/** A process that still runs: a killed one may stay a zombie until its new parent (pid 1) reaps it. */
function alive(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ').at(-1)![0] !== 'Z';
  } catch {
    return false;
  }
}

for (const [name, make] of Object.entries(hanging)) {
  describe(`power driver contract: ${name}, aborted`, () => {
    it('an aborted action rejects promptly as cancelled and leaves nothing behind', async () => {
      for (const action of ['on', 'off', 'cycle'] as const) {
        const { driver, asked, leftBehind } = make();
        const ac = new AbortController();
        const p = driver[action](ac.signal);
        p.catch(() => {}); // checked below
        await asked();
        const t0 = Date.now();
        ac.abort('job cancelled');
        await expect(p).rejects.toThrow(/cancelled \(job cancelled\)/);
        expect(Date.now() - t0).toBeLessThan(PROMPT_MS);
        await leftBehind();
      }
    });

    it('an action whose signal has already aborted rejects at once and never starts', async () => {
      const { driver, leftBehind } = make();
      const ac = new AbortController();
      ac.abort('too late');
      await expect(driver.on(ac.signal)).rejects.toThrow(/cancelled \(too late\)/);
      if (name === 'manual') await leftBehind();
    });
  });
}

describe('power driver errors', () => {
  it('a failing command reports its exit status and stderr', async () => {
    const d = powerDriver({ driver: 'command', on: 'echo relay unreachable >&2; exit 3', off: 'true' });
    await expect(d.on()).rejects.toThrow(/power on command exited with 3: relay unreachable/);
  });

  it('a hung command is killed at its timeout', async () => {
    const d = powerDriver({ driver: 'command', on: 'sleep 30', off: 'true', timeoutMs: 200 });
    await expect(d.on()).rejects.toThrow(/timed out after 200 ms/);
  });

  it('a hung command is killed promptly when its action is aborted (sleep 30)', async () => {
    const d = powerDriver({ driver: 'command', on: 'sleep 30', off: 'true' });
    const ac = new AbortController();
    const p = d.on(ac.signal);
    // Not a wait: the abort itself, 100 ms into the command (spawned before on() returned, so it runs by then).
    setTimeout(() => ac.abort(), 100);
    const t0 = Date.now();
    await expect(p).rejects.toThrow(/power on command cancelled \(aborted\): killed/);
    expect(Date.now() - t0).toBeLessThan(PROMPT_MS);
  });

  it('a cycle without a cycle command stops in its delay when aborted', async () => {
    const d = powerDriver({ driver: 'command', on: 'true', off: 'true', cycleDelayMs: 30_000 });
    const ac = new AbortController();
    const p = d.cycle(ac.signal);
    // Not a wait: the abort itself, 100 ms in, so in the 30 s delay after the instant `off` (a machine so busy that
    // `off` still ran would cancel that instead, with the same reason: the assertion holds either way).
    setTimeout(() => ac.abort('job cancelled'), 100);
    const t0 = Date.now();
    await expect(p).rejects.toThrow(/cancelled \(job cancelled\)/);
    expect(Date.now() - t0).toBeLessThan(PROMPT_MS);
  });

  it('an unknown driver or bad parameters name what is wrong', () => {
    expect(() => powerDriver({ driver: 'relay9000' })).toThrow(/unknown power driver "relay9000" \(known: qemu, command, manual\)/);
    expect(() => powerDriver({ driver: 'constructor' })).toThrow(/unknown power driver "constructor"/);
    expect(() => powerDriver({ driver: 'command', on: 'x' })).toThrow(/bad parameters for power driver "command"[\s\S]*off/);
  });

  it('a QEMU board whose process is gone reports unknown and fails actions clearly', async () => {
    const d = powerDriver({ driver: 'qemu', qmp: join(dir, 'nope.qmp') });
    expect(await d.state()).toBe('unknown');
    await expect(d.on()).rejects.toThrow(/QMP .*nope\.qmp/);
  });
});

import { describe, expect, it } from 'vitest';
import { until } from './until.js';

describe('until (the tests’ one poll helper)', () => {
  it('resolves with the first answer that is not undefined, null or false, and probes no more', async () => {
    const answers = [undefined, null, false, 0, 'late'];
    let probes = 0;
    const got = await until('an answer', () => answers[probes++], { timeoutMs: 5000, intervalMs: 1 });
    expect(got).toBe(0); // 0 and '' are answers: only undefined, null and false mean "not yet"
    expect(probes).toBe(4);
  });

  it('a boolean probe resolves with true; an async probe is awaited', async () => {
    let n = 0;
    await expect(until('the third probe', () => ++n >= 3, { timeoutMs: 5000, intervalMs: 1 })).resolves.toBe(true);
    await expect(until('a found thing', async () => (n++ > 4 ? { n } : undefined), { timeoutMs: 5000, intervalMs: 1 })).resolves.toEqual({ n: 6 });
  });

  it('waits intervalMs between probes', async () => {
    const at: number[] = [];
    await until('three probes', () => at.push(Date.now()) >= 3, { timeoutMs: 5000, intervalMs: 50 });
    expect(at[2]! - at[0]!).toBeGreaterThanOrEqual(95); // timers may fire a ms early
  });

  it('fails after timeoutMs saying what and how long, with detail(); the probe ran again at the deadline', async () => {
    const t0 = Date.now();
    const at: number[] = [];
    const err = await until('the marker on lab-1', () => (at.push(Date.now() - t0), false), { timeoutMs: 250, intervalMs: 200, detail: async () => 'console so far: U-Boot' }).catch((e: Error) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toBe('the marker on lab-1: not within 0.25 s; console so far: U-Boot');
    expect(at.length).toBeGreaterThanOrEqual(3); // at 0, 200 and 250 ms
    expect(at.at(-1)).toBeGreaterThanOrEqual(245); // timers may fire a ms early
    expect(at.at(-1)).toBeLessThan(380); // at the deadline, not a whole interval past it (400 ms)
  });

  it('without detail the message is just what and how long; a failing detail() is said, not swallowed', async () => {
    await expect(until('nothing', () => undefined, { timeoutMs: 10 })).rejects.toThrow(/^nothing: not within 0\.01 s$/);
    const boom = () => {
      throw new Error('log file gone');
    };
    await expect(until('nothing', () => undefined, { timeoutMs: 10, detail: boom })).rejects.toThrow('nothing: not within 0.01 s; (detail failed: log file gone)');
  });

  it('a probe that throws ends the wait with its error at once', async () => {
    const t0 = Date.now();
    await expect(
      until('ser2net listening', () => {
        throw new Error('ser2net exited with 1');
      }, { timeoutMs: 10_000 }),
    ).rejects.toThrow('ser2net exited with 1');
    expect(Date.now() - t0).toBeLessThan(1000);
  });
});

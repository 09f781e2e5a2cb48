/** A probe's answer that means "not yet": keep polling. */
type NotYet = undefined | null | false;

export interface UntilOptions {
  /** How long to keep probing; the probe runs once more at the deadline before the wait fails. */
  timeoutMs: number;
  /** Pause between probes (default 20 ms). Use more for probes that are expensive (ssh, HTTP). */
  intervalMs?: number;
  /** Appended to the failure message: a server log tail, the console so far, the last answer seen. */
  detail?: () => string | Promise<string>;
}

/**
 * Polls `probe` until it answers, and resolves with that answer: the first value that is not `undefined`,
 * `null` or `false` (so a boolean probe resolves with `true`, a lookup with what it found). A probe that
 * throws ends the wait with its error. After `timeoutMs` it fails saying what was awaited and for how
 * long ("console line connected: not within 5 s"), then `; ` and `detail()` if given.
 *
 * For a condition with no event to wait on. When there is one (an emitter, a stream's output, a child's
 * exit), wait for it instead; and never sleep a fixed time hoping something happened by then.
 */
export async function until<T>(what: string, probe: () => T | Promise<T>, o: UntilOptions): Promise<Exclude<T, NotYet>> {
  const intervalMs = o.intervalMs ?? 20;
  const end = Date.now() + o.timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined && v !== null && v !== false) return v as Exclude<T, NotYet>;
    const left = end - Date.now();
    if (left <= 0) break;
    await new Promise((r) => setTimeout(r, Math.min(intervalMs, left)));
  }
  let msg = `${what}: not within ${o.timeoutMs / 1000} s`;
  if (o.detail) {
    const d = await Promise.resolve()
      .then(o.detail)
      .catch((err: unknown) => `(detail failed: ${err instanceof Error ? err.message : String(err)})`);
    if (d) msg += `; ${d}`;
  }
  throw new Error(msg);
}

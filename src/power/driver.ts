export type PowerState = 'on' | 'off' | 'unknown';

/**
 * A board's power switch. Implementations: QEMU (the lab), operator commands, manual.
 *
 * An action takes an optional signal: once it aborts (a cancelled job, a step's timeout) the action
 * stops what it is doing where it can (a manual request leaves the operator's desk, a command is
 * killed) and rejects with an error that says it was cancelled. A driver whose actions are quick may
 * ignore it (QEMU).
 */
export interface PowerDriver {
  on(signal?: AbortSignal): Promise<void>;
  off(signal?: AbortSignal): Promise<void>;
  cycle(signal?: AbortSignal): Promise<void>;
  state(): Promise<PowerState>;
}

/** Why a signal aborted, for an error message: its reason's message, or nothing said. */
export function abortReason(signal: AbortSignal): string {
  const r: unknown = signal.reason;
  if (r === undefined || (r instanceof Error && r.name === 'AbortError')) return 'aborted';
  return r instanceof Error ? r.message : String(r);
}

export type PowerState = 'on' | 'off' | 'unknown';

/** A board's power switch. Implementations: QEMU (the lab), operator commands, manual. */
export interface PowerDriver {
  on(): Promise<void>;
  off(): Promise<void>;
  cycle(): Promise<void>;
  state(): Promise<PowerState>;
}

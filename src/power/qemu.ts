import type { PowerDriver, PowerState } from './driver.js';
import { qmp } from './qmp.js';

/**
 * Power for a virtual-lab board through QEMU's QMP socket. The QEMU process stays up while the board is
 * "off" (paused and reset), the way a real board's USB-serial adapter stays plugged in when its power is cut.
 */
export class QemuPower implements PowerDriver {
  constructor(private readonly qmpSocket: string) {}

  async on(): Promise<void> {
    const [status] = (await qmp(this.qmpSocket, [{ execute: 'query-status' }])) as Array<{ running: boolean }>;
    if (!status?.running) await qmp(this.qmpSocket, [{ execute: 'cont' }]);
  }

  async off(): Promise<void> {
    // Reset while stopped so the next `on` boots from the firmware, as after a real power cut.
    await qmp(this.qmpSocket, [{ execute: 'stop' }, { execute: 'system_reset' }]);
  }

  async cycle(): Promise<void> {
    await qmp(this.qmpSocket, [{ execute: 'stop' }, { execute: 'system_reset' }, { execute: 'cont' }]);
  }

  async state(): Promise<PowerState> {
    try {
      const [status] = (await qmp(this.qmpSocket, [{ execute: 'query-status' }])) as Array<{ running: boolean }>;
      return status?.running ? 'on' : 'off';
    } catch {
      return 'unknown';
    }
  }
}

import { log } from '../log.js';
import { qmp } from '../power/qmp.js';

/**
 * QEMU 10's sun8i-emac model (the `bpim2u` board's GMAC) stops receiving for good when a frame reaches
 * it while U-Boot's receiver is off; U-Boot then sends DHCPDISCOVER after DISCOVER and never sees our
 * OFFERs. A real board does not do this, and on the lab's bridge a tenant's other boards share its L2
 * (their broadcasts reach it). A QMP `stop` + `cont` makes QEMU flush the frames queued for the NIC and
 * read the tap again (scripts/lab-sunxi/boot-demo.sh found this), so the lab watches the DHCP server:
 * `offers` OFFERs to one such board with no REQUEST in between → one stop + cont.
 */
export class LabUnwedger {
  private readonly unanswered = new Map<string, number>();
  constructor(
    /** The QMP socket of each board that needs this, by MAC. */
    private readonly boards: Map<string, { id: string; qmp: string }>,
    private readonly onKick: (boardId: string) => void = () => {},
    private readonly offers = 3,
  ) {}

  /** Feed it every DHCP event (offer and ack matter). */
  readonly onDhcpEvent = (ev: { type: string; mac?: string }): void => {
    const b = ev.mac ? this.boards.get(ev.mac) : undefined;
    if (!b) return;
    if (ev.type === 'ack') {
      this.unanswered.delete(ev.mac!);
      return;
    }
    if (ev.type !== 'offer') return;
    const n = (this.unanswered.get(ev.mac!) ?? 0) + 1;
    if (n < this.offers) {
      this.unanswered.set(ev.mac!, n);
      return;
    }
    this.unanswered.delete(ev.mac!);
    log.info({ board: b.id }, `lab: ${this.offers} DHCP offers unanswered: QMP stop + cont (the emulated sunxi GMAC's receive wedge)`);
    this.onKick(b.id);
    void kick(b.qmp).catch((err: Error) => log.warn({ err, board: b.id }, 'lab: stop + cont failed'));
  };
}

/** stop + cont, only while the board runs: a board the server has switched off stays off. */
async function kick(socket: string): Promise<void> {
  const [status] = (await qmp(socket, [{ execute: 'query-status' }], 5000)) as Array<{ running: boolean }>;
  if (status?.running) await qmp(socket, [{ execute: 'stop' }, { execute: 'cont' }], 5000);
}

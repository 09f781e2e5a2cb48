import { checkNetworkId, PortBook, type BoardPort, type NetworkDriver, type NetworkState } from './driver.js';

/**
 * No fencing at all: for a boot network with one trusted tenant. It keeps the book (so state() shows
 * what would be fenced) and says loudly, in state() and at construction (registry), that nothing is.
 */
export class NoNetwork implements NetworkDriver {
  readonly name = 'none';
  private readonly book = new PortBook();

  async start(): Promise<void> {}
  async stop(): Promise<void> {}

  async attach(raw: BoardPort): Promise<void> {
    const p = this.book.admit(raw);
    this.book.ports.set(p.boardId, p);
  }

  async detach(boardId: string): Promise<void> {
    this.book.ports.delete(boardId);
    this.book.networkOf.delete(boardId);
  }

  async join(boardId: string, networkId: string): Promise<void> {
    checkNetworkId(networkId);
    this.book.attached(boardId);
    this.book.networkOf.set(boardId, networkId);
  }

  async leave(boardId: string): Promise<void> {
    this.book.attached(boardId);
    this.book.networkOf.delete(boardId);
  }

  ports(): NetworkState['ports'] {
    return this.book.snapshot().ports;
  }

  async state(): Promise<NetworkState> {
    return {
      driver: this.name,
      boardIsolation: 'none',
      ...this.book.snapshot(),
      problems: ['network driver "none": boards are not isolated — tenants can spoof MACs and IPs, answer DHCP and reach each other'],
    };
  }
}

/** One entry of a board's recent history: the first place an operator looks when a board won't boot. */
export interface BoardEvent {
  time: string;
  type: 'dhcp' | 'tftp' | 'state' | 'power' | 'firmware' | 'error';
  message: string;
  details?: Record<string, unknown>;
}

/** The last `perBoard` events of each board, in memory (boot chatter is too frequent to persist). */
export class BoardEvents {
  private readonly byBoard = new Map<string, BoardEvent[]>();
  private readonly listeners = new Set<(boardId: string, ev: BoardEvent) => void>();
  constructor(private readonly perBoard = 200) {}

  add(boardId: string, ev: Omit<BoardEvent, 'time'>): void {
    const full = { time: new Date().toISOString(), ...ev };
    let list = this.byBoard.get(boardId);
    if (!list) this.byBoard.set(boardId, (list = []));
    list.push(full);
    if (list.length > this.perBoard) list.splice(0, list.length - this.perBoard);
    for (const l of this.listeners) l(boardId, full);
  }

  list(boardId: string): BoardEvent[] {
    return [...(this.byBoard.get(boardId) ?? [])];
  }

  forget(boardId: string): void {
    this.byBoard.delete(boardId);
  }

  subscribe(fn: (boardId: string, ev: BoardEvent) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }
}

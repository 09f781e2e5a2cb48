/**
 * What a job's end does to its lease and board (src/leases/settle.ts). It runs inside the job's last
 * state write, so it must never throw: a throw refuses that write and the job stays `running` for good.
 */
import { describe, expect, it } from 'vitest';
import { settleLease } from '../../src/leases/settle.js';
import { emptyState, type Board, type Job, type Lease, type State } from '../../src/store/schema.js';

function rack(boardState: Board['state'] | 'gone', leaseState: Lease['state'], jobId = 'j-1'): State {
  const s = emptyState();
  if (boardState !== 'gone') s.boards.push({ id: 'b-1', state: boardState } as unknown as Board);
  s.leases.push({ id: 'l-1', kind: 'board', boardId: 'b-1', state: leaseState, jobId } as unknown as Lease);
  return s;
}
const job = (kind: Job['kind'], state: Job['state'], error?: string) => ({ id: 'j-1', kind, leaseId: 'l-1', state, error }) as unknown as Job;
const lease = (s: State) => s.leases[0]!;

describe('settleLease', () => {
  it('a provision that succeeded makes lease and board active; one that failed puts both in error', () => {
    const s = rack('provisioning', 'provisioning');
    settleLease(s, job('provision', 'succeeded'));
    expect([lease(s).state, s.boards[0]!.state, s.transitions.length]).toEqual(['active', 'active', 1]);
    const f = rack('provisioning', 'provisioning');
    settleLease(f, job('provision', 'failed', 'dhcp: timed out'));
    expect([lease(f).state, lease(f).stateReason, f.boards[0]!.state]).toEqual(['error', 'provision failed: dhcp: timed out', 'error']);
  });

  it('a release that succeeded marks the lease released and leaves the board to the release steps', () => {
    const s = rack('available', 'releasing');
    settleLease(s, job('release', 'succeeded'));
    expect([lease(s).state, typeof lease(s).releasedAt, s.boards[0]!.state, s.transitions.length]).toEqual(['released', 'string', 'available', 0]);
  });

  it('a lease another job has taken over is left to that job', () => {
    const s = rack('releasing', 'releasing', 'j-2'); // a release began while j-1 was being resumed
    settleLease(s, job('provision', 'succeeded'));
    expect([lease(s).state, s.boards[0]!.state, s.transitions.length]).toEqual(['releasing', 'releasing', 0]);
  });

  it('never throws for a board that is gone or moved where the transition cannot follow: the lease says why', () => {
    const gone = rack('gone', 'releasing');
    expect(() => settleLease(gone, job('release', 'failed', 'network: boom'))).not.toThrow();
    expect([lease(gone).state, lease(gone).stateReason]).toEqual(['error', 'release failed: network: boom; board b-1 not moved to error: it is no longer enrolled']);
    const moved = rack('maintenance', 'provisioning'); // an operator took it out meanwhile
    expect(() => settleLease(moved, job('provision', 'succeeded'))).not.toThrow();
    expect([lease(moved).state, lease(moved).stateReason, moved.boards[0]!.state]).toEqual(['active', 'board b-1 not moved to active: it is maintenance', 'maintenance']);
  });
});

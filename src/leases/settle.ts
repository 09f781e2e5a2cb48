import { applyTransition } from '../inventory/boards.js';
import { canTransition } from '../inventory/lifecycle.js';
import type { Board, Job, State } from '../store/schema.js';

/**
 * What a provision, reimage or release job's end means for its lease and board. It runs inside the job's
 * last state write (JobRunner.run's `settle`), so a crash never leaves one written without the other;
 * and so it never throws: a throw would refuse that write, and the job would stay `running` for good.
 * - A lease another job has taken over since (a release begun while this job was being resumed) is
 *   that job's to decide: left as it is.
 * - A board that is gone, or that an operator has moved where this transition cannot follow, stays
 *   where it is; the lease says so in its reason.
 */
export function settleLease(s: State, job: Job): void {
  const l = s.leases.find((x) => x.id === job.leaseId);
  if (!l || (l.jobId !== undefined && l.jobId !== job.id)) return; // (a lease from before jobId was recorded: its job)
  const ok = job.state === 'succeeded';
  let boardTo: { to: Board['state']; reason: string } | undefined;
  if (job.kind === 'release') {
    if (ok) {
      l.state = 'released';
      l.releasedAt = new Date().toISOString();
      delete l.iscsi;
    } else {
      l.state = 'error';
      l.stateReason = `release failed: ${job.error}`;
      boardTo = { to: 'error', reason: `release of lease ${l.id} failed: ${job.error}` };
    }
  } else if (ok) {
    l.state = 'active';
    delete l.stateReason;
    boardTo = { to: 'active', reason: `lease ${l.id} ${job.kind === 'provision' ? 'booted' : 'reimaged'}` };
  } else {
    l.state = 'error';
    l.stateReason = `${job.kind} failed: ${job.error}`;
    boardTo = { to: 'error', reason: `lease ${l.id}: ${job.kind} failed: ${job.error}` };
  }
  if (!boardTo || !l.boardId) return;
  const board = s.boards.find((b) => b.id === l.boardId);
  if (board && canTransition(board.state, boardTo.to)) applyTransition(s, board.id, boardTo.to, boardTo.reason);
  else {
    const why = `board ${l.boardId} not moved to ${boardTo.to}: ${board ? `it is ${board.state}` : 'it is no longer enrolled'}`;
    l.stateReason = l.stateReason ? `${l.stateReason}; ${why}` : why;
  }
}

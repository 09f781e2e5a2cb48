import type { BoardState } from '../store/schema.js';

/**
 * Board lifecycle. A board is enrolled, becomes available, is provisioned for a lease, runs it, is
 * released back to available; operators put it in maintenance; failures put it in error with a reason
 * until an operator clears it.
 */
export const BOARD_TRANSITIONS: Record<BoardState, readonly BoardState[]> = {
  enrolled: ['available', 'maintenance'],
  available: ['provisioning', 'maintenance', 'error'],
  provisioning: ['active', 'provisioning', 'releasing', 'error'],
  active: ['provisioning', 'releasing', 'error'],
  releasing: ['available', 'error'],
  maintenance: ['available'],
  error: ['available', 'maintenance', 'releasing', 'provisioning'], // provisioning: the lease holding it reimages
};

export function canTransition(from: BoardState, to: BoardState): boolean {
  return BOARD_TRANSITIONS[from].includes(to);
}

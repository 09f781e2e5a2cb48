/**
 * Board isolation at rack scale (#11): attaching a board to the linux-bridge driver's fixed nftables
 * rule set costs the same at 2 boards and at 1,000 — one transaction of set elements, never a rule.
 * Measured with the driver's own attach transaction (src/network/measure.ts) in a throw-away netns;
 * the reference is the same driver at 2 boards. Target: the last 10 attaches cost ≤ 1.5× the first 10,
 * and the rule count does not change.
 */
import { measureAttach } from '../src/network/measure.js';

export async function run() {
  const m = await measureAttach(1000, { withPorts: false });
  const ratio = +(m.msPerAttachLast10 / m.msPerAttachFirst10).toFixed(2);
  return {
    boards: m.boards,
    msPerAttachAt2to11: +m.msPerAttachFirst10.toFixed(2),
    msPerAttachAt991to1000: +m.msPerAttachLast10.toFixed(2),
    ratio,
    target: '≤ 1.5× and equal rule counts',
    rules: { at2: m.rulesAt2, at1000: m.rulesAtN },
    hit: ratio <= 1.5 && m.rulesAt2 === m.rulesAtN,
    totalSeconds: +(m.totalMs / 1000).toFixed(1),
  };
}

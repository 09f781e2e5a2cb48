import { describe, expect, it } from 'vitest';
import { measureAttach } from '../../src/network/measure.js';
import { requireRoot, requireTools } from '../helpers/tools.js';

requireRoot();
requireTools('nft', 'bridge');

// Not a timed assertion: the rule set is fixed, so 1,000 boards are 1,000 set elements and not one rule more.
describe('linux-bridge network driver at scale', () => {
  it('attaching 1,000 boards adds set elements, never rules', { timeout: 300_000 }, async () => {
    const m = await measureAttach(1000, { withPorts: false });
    console.log(`network attach: ${JSON.stringify(m)}`);
    expect(m.elementsAtN).toBe(1000);
    expect(m.rulesAt2).toBeGreaterThan(0);
    expect(m.rulesAtN).toBe(m.rulesAt2);
  });
});

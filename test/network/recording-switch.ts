import { writeFileSync } from 'node:fs';
import type { NetworkSpec } from '../../src/network/registry.js';

/**
 * A stand-in managed switch for the `command` network driver: every command appends what the shell
 * received (the action and its filled placeholders) to `log`, which starts empty.
 */
export function recordingSwitch(log: string, o: { portOnJoin?: boolean } = {}): NetworkSpec {
  writeFileSync(log, '');
  const rec = (what: string, ...ph: string[]) => `echo ${what} ${ph.map((p) => `{${p}}`).join(' ')} >> ${log}`;
  const joinArgs = o.portOnJoin === false ? ['boardId', 'networkId'] : ['boardId', 'port', 'networkId'];
  return {
    driver: 'command',
    attach: rec('attach', 'boardId', 'port', 'mac', 'ip'),
    detach: rec('detach', 'boardId', 'port'),
    join: rec('join', ...joinArgs),
    leave: rec('leave', ...joinArgs),
  };
}

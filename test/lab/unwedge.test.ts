import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UBOOT_ARM } from '../../src/lab/kinds.js';
import { LabUnwedger } from '../../src/lab/unwedge.js';
import { qmp } from '../../src/power/qmp.js';
import { requireTools } from '../helpers/tools.js';
import { until } from '../helpers/until.js';

// The lab's answer to the emulated sunxi GMAC's receive wedge, against a real QEMU: after N DHCP offers
// with no REQUEST, one QMP stop + cont; never for another board, never after an ACK, never a board that is off.
const dir = mkdtempSync(join(tmpdir(), 'unwedge-'));
const sock = join(dir, 'board.qmp');
const MAC = '52:54:00:aa:00:01';
const status = async () => ((await qmp(sock, [{ execute: 'query-status' }])) as Array<{ running: boolean; status: string }>)[0]!;

beforeAll(() => {
  requireTools('qemu-system-arm');
  execFileSync('qemu-system-arm', ['-M', 'virt', '-m', '64', '-bios', UBOOT_ARM, '-display', 'none', '-monitor', 'none', '-serial', 'null', '-nic', 'none', '-qmp', `unix:${sock},server=on,wait=off`, '-S', '-daemonize', '-pidfile', `${sock}.pid`]);
});
afterAll(() => {
  try {
    process.kill(Number(readFileSync(`${sock}.pid`, 'utf8')), 'SIGKILL');
  } catch {
    /* gone */
  }
  rmSync(dir, { recursive: true, force: true });
});

describe('lab unwedger', () => {
  it('kicks a running board after 3 unanswered offers, once; an ACK resets the count; other MACs are not its business', async () => {
    const kicked: string[] = [];
    const u = new LabUnwedger(new Map([[MAC, { id: 'bpi-1', qmp: sock }]]), (id) => kicked.push(id));
    await qmp(sock, [{ execute: 'cont' }]);
    u.onDhcpEvent({ type: 'offer', mac: MAC });
    u.onDhcpEvent({ type: 'offer', mac: MAC });
    u.onDhcpEvent({ type: 'ack', mac: MAC }); // it answered: the count starts again
    u.onDhcpEvent({ type: 'offer', mac: MAC });
    u.onDhcpEvent({ type: 'offer', mac: MAC });
    for (let i = 0; i < 5; i++) u.onDhcpEvent({ type: 'offer', mac: '52:54:00:aa:00:02' });
    u.onDhcpEvent({ type: 'ignored', mac: MAC });
    expect(kicked).toEqual([]);
    u.onDhcpEvent({ type: 'offer', mac: MAC });
    expect(kicked).toEqual(['bpi-1']);
    // stop + cont: the board runs on afterwards.
    await until('the board running after the kick', async () => ((await status()).running ? true : undefined), { timeoutMs: 10_000 });
    u.onDhcpEvent({ type: 'offer', mac: MAC });
    u.onDhcpEvent({ type: 'offer', mac: MAC });
    expect(kicked).toEqual(['bpi-1']); // the count started again after the kick
  });

  it('a board the server switched off stays off', async () => {
    const u = new LabUnwedger(new Map([[MAC, { id: 'bpi-1', qmp: sock }]]));
    await qmp(sock, [{ execute: 'stop' }]);
    for (let i = 0; i < 3; i++) u.onDhcpEvent({ type: 'offer', mac: MAC });
    await new Promise((r) => setTimeout(r, 1000)); // the kick is asynchronous: give it the time it would take
    expect((await status()).running).toBe(false);
  });
});

/**
 * U-Boot on a lab board fetches the test image's kernel from our TFTP server and from tftp-hpa's
 * in.tftpd, in the same run, at U-Boot's defaults and with tftpwindowsize (RFC 7440). Time is taken on
 * the host from sending the command to U-Boot's "Bytes transferred" line, identically for both servers.
 */
import { startLabServer } from '../test/helpers/lab-server.js';
import { spawn } from 'node:child_process';
import { setAddr } from '../src/lab/netns.js';
import { powerDriver } from '../src/power/registry.js';
import { sessionConsole } from '../test/helpers/serial.js';

// Debian's U-Boot has no tftpdstp (CONFIG_TFTP_PORT), so the reference server gets its own address, port 69.
const REF_IP = '10.81.0.2';
// Single transfers are ~0.4 s and U-Boot under TCG swings them by ±15%: each server's median of 9.
const RUNS = Number(process.env.BENCH_RUNS ?? 9);

export async function run() {
  // No port fences here: they let a board reach the controller's boot IP alone, and the reference listens
  // on its own address; both servers' packets then cross the same plain bridge.
  const server = await startLabServer({ net: 81, prefix: 'dzb', extra: { network: { driver: 'none' } } });
  const config = server.config;
  const board = server.inventory.list()[0]!;
  const image = (await server.images.get('test'))!;
  await setAddr(server.lab!.hostIf, `${REF_IP}/24`);
  const ref = spawn('in.tftpd', ['-L', '-s', image.dir, '-a', `${REF_IP}:69`], { stdio: 'ignore' });
  const con = sessionConsole(server.consoles, board.id);
  try {
    await powerDriver(board.power, board.id).on();
    await con.out.waitFor('Hit any key to stop autoboot', 60_000, 'U-Boot autoboot prompt');
    await con.type('\n');
    await con.out.waitFor('=> ', 10_000, 'U-Boot prompt');
    const cmd = async (line: string, until: RegExp | string, timeoutMs = 10_000) => {
      await con.type(line + '\n');
      return con.out.waitFor(until, timeoutMs, `U-Boot: ${line}`);
    };
    await cmd(`setenv ipaddr ${board.ip}; setenv serverip ${config.bootIp}; setenv netmask 255.255.255.0; echo OK`, /OK/);
    const fetch = async (server: 'ours' | 'tftp-hpa', windowsize: number) => {
      const [ip, file] = server === 'ours' ? [config.bootIp, 'images/test/vmlinuz'] : [REF_IP, 'vmlinuz'];
      await cmd(`setenv serverip ${ip}; setenv tftpblocksize 1468; setenv tftpwindowsize ${windowsize}; echo OK`, /OK/);
      // The clock starts at the Enter key, not the first letter: typing takes 15 ms a character (~0.5 s for
      // this line, as long as the transfer), and our path (images/test/vmlinuz) is 12 characters longer (~190 ms).
      const line = `tftpboot \${kernel_addr_r} ${file}`;
      await con.type(line);
      const t0 = process.hrtime.bigint();
      const at = Date.now(); // wall clock, to line the run up with a packet capture (BENCH_VERBOSE)
      await con.type('\n');
      const m = await con.out.waitFor(/Bytes transferred = (\d+) \(|TFTP error[^\n]*|Retry count exceeded/, 300_000, `U-Boot: ${line}`);
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      if (!m[1]) throw new Error(`${server} windowsize ${windowsize}: ${m[0]}`);
      return { bytes: Number(m[1]), ms, at };
    };
    const results: Record<string, { ours: number; ref: number; ratio: number }> = {};
    for (const windowsize of [1, 16]) {
      const rate = { ours: [] as number[], ref: [] as number[] };
      for (let i = 0; i < RUNS; i++) {
        // Who goes first alternates: neither always follows the other's transfer.
        for (const s of i % 2 ? (['tftp-hpa', 'ours'] as const) : (['ours', 'tftp-hpa'] as const)) {
          const r = await fetch(s, windowsize);
          rate[s === "ours" ? "ours" : "ref"].push(r.bytes / 1e6 / (r.ms / 1000));
          if (process.env.BENCH_VERBOSE) console.error(s, windowsize, r);
        }
      }
      const ours = median(rate.ours);
      const refRate = median(rate.ref);
      results[windowsize === 1 ? 'defaults (blksize 1468, window 1)' : `tftpwindowsize ${windowsize}`] = {
        ours: round(ours),
        ref: round(refRate),
        ratio: round(ours / refRate),
      };
    }
    return { what: 'U-Boot (qemu virt, TCG) tftpboot of the 5.4 MB test kernel, MB/s (Enter key to "Bytes transferred"), median of ' + RUNS, results };
  } finally {
    await con.close();
    ref.kill();
    await server.stop({ labDown: true });
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const round = (x: number) => Math.round(x * 100) / 100;

if (import.meta.url === `file://${process.argv[1]}`) {
  run().then((r) => {
    console.log(r.what);
    console.table(r.results);
  });
}

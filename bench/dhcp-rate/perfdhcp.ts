/** Parsing perfdhcp's (Kea 2.2) final report, and the /proc CPU counters the bench reads. */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

export interface Exchange {
  sent: number;
  received: number;
  drops: number;
  orphans: number;
  avgDelayMs: number | null;
}

export interface PerfReport {
  /** perfdhcp's own "Rate:" line (4-way exchanges/s), when printed. */
  rate: number | null;
  do: Exchange | null;
  ra: Exchange | null;
}

function section(out: string, name: string): Exchange | null {
  const start = out.indexOf(`***Statistics for: ${name}***`);
  if (start < 0) return null;
  const rest = out.slice(start + name.length + 20);
  const end = rest.indexOf('***Statistics for:');
  const s = end < 0 ? rest : rest.slice(0, end);
  const num = (label: string): number | null => {
    const m = new RegExp(`^${label}: ([0-9.]+)`, 'm').exec(s);
    return m ? Number(m[1]) : null;
  };
  const sent = num('sent packets');
  const received = num('received packets');
  if (sent === null || received === null) return null;
  return { sent, received, drops: num('drops') ?? sent - received, orphans: num('orphans') ?? 0, avgDelayMs: num('avg delay') };
}

export function parsePerfdhcp(out: string): PerfReport {
  const rate = /^Rate: ([0-9.]+)/m.exec(out);
  return { rate: rate ? Number(rate[1]) : null, do: section(out, 'DISCOVER-OFFER'), ra: section(out, 'REQUEST-ACK') };
}

const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

/** User + system CPU seconds of a process, all its threads (/proc/<pid>/stat fields 14 and 15). */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // f[0] is field 3 (state)
  return (Number(f[11]) + Number(f[12])) / CLK_TCK;
}

/** CPU seconds this process's waited-for children used (/proc/self/stat cutime + cstime): perfdhcp's, once it exited. */
export function childrenCpuSeconds(): number {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[13]) + Number(f[14])) / CLK_TCK;
}

/** Busy CPU seconds of the whole host, all cores (/proc/stat: everything but idle and iowait). */
export function hostBusySeconds(): number {
  const cpu = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = cpu.slice(0, 8).reduce((a, b) => a + b, 0);
  return (total - cpu[3]! - cpu[4]!) / CLK_TCK;
}

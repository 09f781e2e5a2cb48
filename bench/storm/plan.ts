/**
 * What one storm run is: the boards, where the servers are, the client's U-Boot settings and what every
 * file must contain. Written by bench/storm.ts, read by the client simulator (bench/storm/client.ts),
 * which runs in its own network namespace and answers with a StormResult.
 */
import { intToIp, ipToInt } from '../../src/util/net.js';

/**
 * The storm's network. test/ci/lab-subnets.test.ts finds each bench's lab prefix by the literal
 * `subnet: '10.N.0.0/24'`: this claims 10.98 (LAB_CLAIM). The run itself uses the /22 inside it
 * (1,000 boards do not fit a /24): server .0.1, relay .0.2, boards from .0.10 up to .3.254.
 */
export const LAB_CLAIM = { subnet: '10.98.0.0/24' } as const;
export const STORM_SUBNET = '10.98.0.0/22';
export const STORM_PREFIX_LEN = 22;
export const SERVER_IP = '10.98.0.1';
export const RELAY_IP = '10.98.0.2';
/** One relay address per client process (bench/storm/harness.ts runClients): each binds its own port 67. */
export const RELAY_IPS = [RELAY_IP, '10.98.0.3', '10.98.0.4', '10.98.0.5'] as const;
const FIRST_BOARD_IP = '10.98.0.10';
export const MAX_BOARDS = ipToInt('10.98.3.254') - ipToInt(FIRST_BOARD_IP) + 1;

export type Route = 'boot.scr' | 'pxe';

export interface StormBoard {
  id: string;
  mac: string;
  ip: string;
  model: 'qemu-virt-armv7' | 'bananapi-m2u';
  route: Route;
}

/** Half the boards boot through boot.scr.uimg (QEMU virt model), half through pxelinux (Banana Pi M2 Ultra: with a DTB). */
export function stormBoards(n: number): StormBoard[] {
  if (n > MAX_BOARDS) throw new Error(`at most ${MAX_BOARDS} boards fit ${STORM_SUBNET}`);
  return Array.from({ length: n }, (_, i) => {
    const pxe = i % 2 === 0;
    return {
      id: `storm-${String(i).padStart(4, '0')}`,
      mac: `02:98:00:00:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`,
      ip: intToIp(ipToInt(FIRST_BOARD_IP) + i),
      model: pxe ? 'bananapi-m2u' : 'qemu-virt-armv7',
      route: pxe ? 'pxe' : 'boot.scr',
    };
  });
}

/** A file's expected content: its size and CRC-32 (for a boot script image: of everything after its 64-byte header, which holds a timestamp). */
export interface Expect {
  size: number;
  crc: number;
}

export interface Plan {
  serverIp: string;
  relayIp: string;
  dhcpPort: number;
  tftpPort: number;
  boards: StormBoard[];
  /** U-Boot's tftpblocksize (1468) and tftpwindowsize (1: option not sent). */
  blksize: number;
  windowsize: number;
  /** U-Boot net/tftp.c: TIMEOUT 5000 ms per retransmission, at most CONFIG_NET_RETRY_COUNT * 2 = 10 timeouts per file. */
  tftpTimeoutMs: number;
  tftpTimeoutCountMax: number;
  /** U-Boot net/bootp.c: first retransmission after 250 ms, doubling up to 2 s; gives up after (3 + 5 * 5) s; REQUESTING waits 5 s. */
  dhcpFirstTimeoutMs: number;
  dhcpMaxTimeoutMs: number;
  dhcpTotalMs: number;
  dhcpRequestTimeoutMs: number;
  /** Hard bound on the whole run: boards not done by then count as timed out. */
  deadlineMs: number;
  /** Wall-clock time (ms since the epoch) at which the power comes back: client processes start together. */
  startAt?: number;
  /** Image files by TFTP path. */
  files: Record<string, Expect>;
  /** Each board's generated file (boot script or pxelinux config), by board id. */
  generated: Record<string, Expect & { kind: 'script' | 'pxelinux' }>;
}

export interface FileResult {
  path: string;
  bytes: number;
  ms: number;
  blksize: number;
  windowsize: number;
}

export interface BoardResult {
  id: string;
  ok: boolean;
  timedOut: boolean;
  error?: string;
  /** From the power cut (all boards start together) to the last byte of its last file. */
  ms?: number;
  dhcpMs?: number;
  files: FileResult[];
  dhcpRetransmits: number;
  /** TFTP timeouts (each resends the RRQ or the last ACK, as U-Boot does). */
  tftpTimeouts: number;
  /** ACKs sent for an out-of-order block (U-Boot's one "nack" per gap in a window). */
  nacks: number;
  /** DATA blocks received that were not the next one (duplicates, blocks past a gap). */
  outOfOrder: number;
}

export interface StormResult {
  boards: BoardResult[];
  /** Until the last board had all its files (or the deadline). */
  wallMs: number;
  clientCpuS: number;
  /** UDP datagrams the kernel dropped in the clients' namespace for a full receive buffer (/proc/net/snmp RcvbufErrors). */
  clientRcvbufErrors: number;
  /** Client processes the boards were spread over, and how late the last of them started (ms past startAt). */
  clientProcesses?: number;
  clientStartLateMs?: number;
}

/** This network namespace's UDP RcvbufErrors counter. */
export function udpRcvbufErrors(snmp: string): number {
  const lines = snmp.split('\n').filter((l) => l.startsWith('Udp:'));
  if (lines.length < 2) return 0;
  const i = lines[0]!.split(/\s+/).indexOf('RcvbufErrors');
  return i < 0 ? 0 : Number(lines[1]!.split(/\s+/)[i]);
}

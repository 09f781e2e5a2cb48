import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync, statSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { log } from '../log.js';
import { Tgtadm } from './tgtadm.js';

export interface TgtDaemonOptions {
  /** tgtd's management port (`tgtd -C`, `tgtadm -C`): one per tgtd on the host; the system's is 0. */
  controlPort: number;
  /** Address and port the iSCSI portal listens on (the boot network address, in production). */
  portalIp: string;
  portalPort?: number;
  /** First restart delay; doubles while tgtd keeps dying soon after a start (at most 5 s). */
  restartDelayMs?: number;
  /** tgtd's own messages (appended); default: <tmpdir>/dozen-tgtd.<controlPort>.log. */
  logFile?: string;
}

export interface RestartInfo {
  at: string;
  /** From the moment tgtd was seen dead until its targets were back (hooks done). */
  downMs: number;
  reason: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Our own tgtd (`tgtd -f -C <port> --iscsi portal=<ip>:<port>`), supervised: tgtd keeps targets only
 * in memory, so when it dies (crash, kill -9) it is started again and the `onRestart` hooks re-create
 * every recorded target. A tgtd of ours left running by an earlier server process (same control port,
 * same command line) is adopted rather than replaced, so boards keep their sessions across a server
 * restart. tgtd runs in its own session (detached) so a terminal's Ctrl-C does not reach it.
 */
export class TgtDaemon {
  readonly adm: Tgtadm;
  private child: ChildProcess | null = null;
  private adoptedPid: number | null = null;
  private poll: NodeJS.Timeout | null = null;
  private stopping = false;
  private restarting: Promise<void> | null = null;
  private readonly hooks: Array<() => Promise<unknown>> = [];
  private lastStart = 0;
  private delay: number;
  readonly logFile: string;
  restarts: RestartInfo[] = [];

  constructor(private readonly o: TgtDaemonOptions) {
    // tgtd parses -C as a signed 16-bit value.
    if (!Number.isInteger(o.controlPort) || o.controlPort < 0 || o.controlPort > 32767) {
      throw new Error(`tgtd control port ${o.controlPort} is out of range: tgtd accepts 0-32767`);
    }
    this.adm = new Tgtadm(o.controlPort);
    this.delay = o.restartDelayMs ?? 100;
    this.logFile = o.logFile ?? join(tmpdir(), `dozen-tgtd.${o.controlPort}.log`);
  }

  get portal(): { ip: string; port: number } {
    return { ip: this.o.portalIp, port: this.o.portalPort ?? 3260 };
  }

  get pid(): number | null {
    return this.child?.pid ?? this.adoptedPid;
  }

  /** Runs after every restart (not the first start), awaited in order: re-create the targets here. */
  onRestart(fn: () => Promise<unknown>): void {
    this.hooks.push(fn);
  }

  private argv(): string[] {
    return ['-f', '-C', String(this.o.controlPort), '--iscsi', `portal=${this.portal.ip}:${this.portal.port}`];
  }

  async start(): Promise<void> {
    this.stopping = false;
    if (await this.adm.ping()) {
      const pid = await this.findOurs();
      if (!pid) {
        throw new Error(
          `a tgtd that is not ours answers on control port ${this.o.controlPort} (not started as tgtd ${this.argv().join(' ')}): choose another control port`,
        );
      }
      this.adoptedPid = pid;
      log.info({ pid, controlPort: this.o.controlPort }, 'tgtd: adopted the running tgtd of an earlier start');
    } else {
      await this.spawn();
    }
    // Own child: its exit event says when it dies. Adopted: poll (it is not our child).
    this.poll = setInterval(() => {
      if (this.adoptedPid && !alive(this.adoptedPid)) this.died(`adopted tgtd ${this.adoptedPid} is gone`);
    }, 500);
  }

  private async spawn(): Promise<void> {
    // Output goes to a file, never a pipe: a pipe we fail to drain (a blocked event loop) would block
    // tgtd's logging and with it every board's I/O.
    const logFrom = fileSize(this.logFile);
    const fd = openSync(this.logFile, 'a');
    const child = spawn('tgtd', this.argv(), { stdio: ['ignore', fd, fd], detached: true });
    closeSync(fd);
    this.child = child;
    this.adoptedPid = null;
    this.lastStart = Date.now();
    const exited = new Promise<string>((res) => {
      child.once('exit', (code, signal) => res(`tgtd exited (code ${code}, signal ${signal})`));
      child.once('error', (err) => res(`tgtd could not start: ${err.message}`));
    });
    let ready = false;
    child.once('exit', (code, signal) => {
      // Before it was ready the failure is start()'s (or the restart loop's) to report, not a death.
      if (this.child === child && ready) {
        this.child = null;
        this.died(`tgtd ${child.pid} exited (code ${code}, signal ${signal})`);
      }
    });
    // Ready when the control port answers; give up if tgtd exits first (e.g. portal address in use).
    const deadline = Date.now() + 10_000;
    let early: string | null = null;
    void exited.then((r) => (early = r));
    while (!(await this.adm.ping())) {
      if (early) throw new Error(`${early} before it was ready: ${this.logTail(logFrom)}`);
      if (Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new Error(`tgtd did not answer on control port ${this.o.controlPort} within 10 s`);
      }
      await sleep(50);
    }
    ready = true;
    log.info({ pid: child.pid, controlPort: this.o.controlPort, portal: `${this.portal.ip}:${this.portal.port}` }, 'tgtd: started');
  }

  /** tgtd died unexpectedly: restart it (with backoff if it keeps dying) and re-create its targets. */
  private died(reason: string): void {
    if (this.stopping || this.restarting) return;
    const seenAt = Date.now();
    log.error({ reason }, 'tgtd: died; restarting it and re-creating its targets');
    this.adoptedPid = null;
    this.restarting = (async () => {
      this.delay = seenAt - this.lastStart < 10_000 ? Math.min(this.delay * 2, 5000) : (this.o.restartDelayMs ?? 100);
      for (let attempt = 1; !this.stopping; attempt++) {
        await sleep(this.delay);
        if (this.stopping) return;
        try {
          await this.spawn();
          for (const hook of this.hooks) await hook();
          const info = { at: new Date().toISOString(), downMs: Date.now() - seenAt, reason };
          this.restarts.push(info);
          log.warn(info, 'tgtd: restarted and targets re-created');
          return;
        } catch (err) {
          log.error({ err, attempt }, 'tgtd: restart failed; trying again');
          this.delay = Math.min(this.delay * 2, 5000);
        }
      }
    })().finally(() => (this.restarting = null));
  }

  /** Resolves once a restart in progress (if any) has finished. */
  async settled(): Promise<void> {
    await this.restarting;
  }

  /**
   * Stops supervising. By default tgtd goes too: its targets are deleted (it ignores SIGTERM while it
   * has any) and it is told to shut down, then killed if it lingers. `leaveRunning` keeps it (and the
   * boards' sessions) alive for the next start to adopt.
   */
  async stop(opts: { leaveRunning?: boolean } = {}): Promise<void> {
    this.stopping = true;
    if (this.poll) clearInterval(this.poll);
    this.poll = null;
    await this.restarting?.catch(() => {});
    const pid = this.pid;
    const child = this.child;
    if (opts.leaveRunning) {
      child?.unref();
      return;
    }
    if (!pid) return;
    const gone = child ? new Promise<void>((r) => (child.exitCode !== null || child.signalCode ? r() : child.once('exit', () => r()))) : null;
    try {
      for (const t of await this.adm.targets()) await this.adm.deleteTarget(t.tid);
      for (const a of await this.adm.accounts()) await this.adm.deleteAccount(a);
      await this.adm.shutdown();
    } catch (err) {
      log.warn({ err }, 'tgtd: clean shutdown failed; killing it');
    }
    const deadline = Date.now() + 5000;
    while (alive(pid) && Date.now() < deadline) await sleep(50);
    if (alive(pid)) process.kill(pid, 'SIGKILL');
    await gone;
    this.child = null;
    this.adoptedPid = null;
  }

  /** The last lines tgtd wrote since `from` (for error messages). */
  private logTail(from: number): string {
    try {
      const text = readFileSync(this.logFile, 'utf8').slice(from);
      return text.trim().split('\n').slice(-3).join(' | ') || '(no output)';
    } catch {
      return '(no log)';
    }
  }

  /** The pid of a tgtd started with exactly our command line (a previous server process's child). */
  private async findOurs(): Promise<number | null> {
    const want = ['tgtd', ...this.argv()].join('\0');
    for (const name of await readdir('/proc')) {
      if (!/^\d+$/.test(name)) continue;
      const cmd = await readFile(`/proc/${name}/cmdline`, 'utf8').catch(() => '');
      if (cmd.replace(/\0$/, '').replace(/^\S*\/tgtd/, 'tgtd') === want) return Number(name);
    }
    return null;
  }
}

function fileSize(p: string): number {
  try {
    return statSync(p).size;
  } catch {
    return 0;
  }
}

/** Alive and not a zombie (a dead child we have not reaped yet still answers kill 0). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

import { execFile } from 'node:child_process';
import { ControllerFilter } from './controller-filter.js';
import { checkNetworkId, PortBook, type BoardPort, type NetworkDriver, type NetworkState } from './driver.js';
import type { Services } from './nft-ruleset.js';

/**
 * Shell command templates an operator writes for a managed switch (port security, private VLANs, ACLs).
 * Placeholders: {boardId} {port} {mac} {ip} (all actions) and {networkId} (join, leave). Every value is
 * shell-quoted where it is put in, so a template never needs quotes around a placeholder.
 */
export interface CommandNetworkSpec {
  attach: string;
  detach: string;
  join: string;
  leave: string;
  /** Run once by start()/stop() (e.g. install the switch's fixed ACLs); no placeholders. */
  start?: string;
  stop?: string;
  timeoutMs?: number;
  /**
   * The controller's interface on the boot network: when given, its input filter (controller-filter.ts)
   * lets boards reach only `services`, as with linux-bridge. Without it, filter the controller yourself.
   */
  controllerIface?: string;
  controllerNetns?: string;
  services?: Services;
}

/** `'it'\''s'`: the POSIX way to quote anything for /bin/sh. */
export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

const PLACEHOLDER = /\{(boardId|port|mac|ip|networkId)\}/g;

/** Fills a template; an unknown placeholder stays as it is (the operator sees it in the error). */
export function fillTemplate(template: string, values: Partial<Record<'boardId' | 'port' | 'mac' | 'ip' | 'networkId', string>>): string {
  return template.replace(PLACEHOLDER, (all, key: keyof typeof values) => {
    const v = values[key];
    if (v === undefined) throw new Error(`placeholder ${all} has no value here`);
    return shellQuote(v);
  });
}

/** Network fencing through operator-written commands (a managed switch); we trust they do what they say. */
export class CommandNetwork implements NetworkDriver {
  readonly name = 'command';
  private readonly book = new PortBook();
  private readonly ctl?: ControllerFilter;

  constructor(private readonly s: CommandNetworkSpec) {
    if (s.controllerIface) this.ctl = new ControllerFilter(s.controllerIface, s.services ?? { dhcp: 67, tftp: 69, iscsi: 3260, metadata: 8775 }, s.controllerNetns);
  }

  async start(): Promise<void> {
    await this.ctl?.install(); // the controller closed first, then the switch
    if (this.s.start) await this.run(this.s.start, 'start');
  }

  async stop(): Promise<void> {
    if (this.s.stop) await this.run(this.s.stop, 'stop');
    await this.ctl?.remove();
  }

  async attach(raw: BoardPort): Promise<void> {
    const p = this.book.admit(raw);
    const old = this.book.ports.get(p.boardId);
    const net = this.book.networkOf.get(p.boardId);
    const moved = old && (old.port !== p.port || old.mac !== p.mac || old.ip !== p.ip);
    if (moved) await this.detach(p.boardId);
    await this.run(fillTemplate(this.s.attach, { ...p }), 'attach');
    this.book.ports.set(p.boardId, p);
    if (moved && net) await this.join(p.boardId, net); // a board keeps its private network when it moves
  }

  async detach(boardId: string): Promise<void> {
    const p = this.book.ports.get(boardId);
    if (!p) return;
    if (this.book.networkOf.has(boardId)) await this.leave(boardId);
    await this.run(fillTemplate(this.s.detach, { ...p }), 'detach');
    this.book.ports.delete(boardId);
  }

  async join(boardId: string, networkId: string): Promise<void> {
    checkNetworkId(networkId);
    const p = this.book.attached(boardId);
    const current = this.book.networkOf.get(boardId);
    if (current === networkId) return;
    if (current) await this.leave(boardId);
    await this.run(fillTemplate(this.s.join, { ...p, networkId }), 'join');
    this.book.networkOf.set(boardId, networkId);
  }

  async leave(boardId: string): Promise<void> {
    const p = this.book.attached(boardId);
    const networkId = this.book.networkOf.get(boardId);
    if (!networkId) return;
    await this.run(fillTemplate(this.s.leave, { ...p, networkId }), 'leave');
    this.book.networkOf.delete(boardId);
  }

  ports(): NetworkState['ports'] {
    return this.book.snapshot().ports;
  }

  async state(): Promise<NetworkState> {
    return { driver: this.name, boardIsolation: 'operator', ...this.book.snapshot(), problems: (await this.ctl?.problems()) ?? [] };
  }

  private run(cmd: string, what: string): Promise<string> {
    const timeout = this.s.timeoutMs ?? 15_000;
    return new Promise((resolve, reject) => {
      execFile('/bin/sh', ['-c', cmd], { timeout, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
        if (!err) return resolve(stdout);
        const e = err as NodeJS.ErrnoException & { killed?: boolean; code?: number | string };
        const why = e.killed ? `timed out after ${timeout} ms` : `exited with ${e.code}`;
        reject(new Error(`network ${what} command ${why}: ${stderr.trim() || stdout.trim() || cmd}`, { cause: err }));
      });
    });
  }
}

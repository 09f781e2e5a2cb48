import { run } from './run.js';
import { TgtIpc } from './tgt-ipc.js';

/** A target as tgtd reports it (`tgtadm --op show --mode target`). */
export interface TgtTarget {
  tid: number;
  iqn: string;
  /** LUN number → backing-store path (LUN 0, tgtd's own controller, is left out). */
  luns: Map<number, string>;
  accounts: string[];
  /** ACL entries, addresses and initiator names alike (tgtd lists both under "ACL information"). */
  acl: string[];
  /** Connected initiators. */
  sessions: Array<{ initiator: string; ip?: string }>;
}

export interface NewTarget {
  tid: number;
  iqn: string;
  backingStore: string;
  /** LUN 2's backing store: a second disk on the same target (a shared board's Docker data-root), or none. */
  dataBackingStore?: string;
  /** The only initiator name that may see and log in to the target (when no address is given). */
  initiatorName: string;
  /**
   * The only source address that may log in. When given, the ACL is this address alone: tgt admits an
   * initiator that matches either list, and a name (predictable, chosen by the initiator) would let any
   * address in. Worth more than the name only where the network fences source addresses (src/network/).
   */
  initiatorAddress?: string;
  chapUser: string;
  chapSecret: string;
  /** Mutual CHAP: the account the target proves itself with to the initiator (tgt's "outgoing" account). */
  targetUser?: string;
  targetSecret?: string;
  /** Open the backing store with O_DIRECT (bypasses the page cache; see bench/iscsi-perf.ts). */
  directIo?: boolean;
}

/**
 * The one module that knows tgtadm's syntax (tgt 1.0.x); CHAP accounts go over tgtd's socket (tgt-ipc.ts). Everything goes through one tgtd instance,
 * chosen by its control port (`-C`): the project runs its own tgtd beside any system one.
 */
export class Tgtadm {
  /** tgtd's own socket, for what carries a secret: never a child's argv, which `ps` shows anyone. */
  private readonly ipc: TgtIpc;

  constructor(readonly controlPort: number) {
    this.ipc = new TgtIpc(controlPort);
  }

  private adm(args: string[], timeoutMs = 15_000) {
    return run('tgtadm', ['-C', String(this.controlPort), '--lld', 'iscsi', ...args], { timeoutMs });
  }

  /** True when a tgtd answers on the control port. */
  async ping(): Promise<boolean> {
    return this.adm(['--op', 'show', '--mode', 'system'], 3000).then(
      () => true,
      () => false,
    );
  }

  async targets(): Promise<TgtTarget[]> {
    return parseTargets((await this.adm(['--op', 'show', '--mode', 'target'])).stdout);
  }

  async accounts(): Promise<string[]> {
    const out = (await this.adm(['--op', 'show', '--mode', 'account'])).stdout;
    return out
      .split('\n')
      .slice(1)
      .map((l) => l.trim())
      .filter(Boolean);
  }

  /**
   * Creates a complete target: the target, LUN 1 on the backing store (and LUN 2 on the data backing
   * store, when there is one), a CHAP account bound to it,
   * and last the ACL that lets its initiator in — so a half-made target never admits anyone. On any
   * failure what was made is removed again before the error is thrown.
   */
  async createTarget(t: NewTarget): Promise<void> {
    const tid = String(t.tid);
    try {
      await this.adm(['--op', 'new', '--mode', 'target', '--tid', tid, '--targetname', t.iqn]);
      await this.newLun(t.tid, 1, t.backingStore, t.directIo);
      if (t.dataBackingStore) await this.newLun(t.tid, 2, t.dataBackingStore, t.directIo);
      // Account names are global in tgtd: a stale one of the same name (an earlier crash) is replaced.
      if ((await this.accounts()).includes(t.chapUser)) await this.deleteAccount(t.chapUser);
      await this.ipc.newAccount(t.chapUser, t.chapSecret);
      await this.ipc.bindAccount(t.tid, t.chapUser);
      if (t.targetUser && t.targetSecret) {
        if ((await this.accounts()).includes(t.targetUser)) await this.deleteAccount(t.targetUser);
        await this.ipc.newAccount(t.targetUser, t.targetSecret);
        await this.ipc.bindAccount(t.tid, t.targetUser, { outgoing: true });
      }
      // One list only: tgt ORs its address and name lists (either match admits). See test/storage/tgt.test.ts.
      if (t.initiatorAddress) await this.adm(['--op', 'bind', '--mode', 'target', '--tid', tid, '--initiator-address', t.initiatorAddress]);
      else await this.adm(['--op', 'bind', '--mode', 'target', '--tid', tid, '--initiator-name', t.initiatorName]);
    } catch (err) {
      await this.deleteTarget(t.tid, t.chapUser, t.targetUser).catch(() => {});
      throw err;
    }
  }

  private async newLun(tid: number, lun: number, backingStore: string, directIo?: boolean): Promise<void> {
    await this.adm([
      '--op', 'new', '--mode', 'logicalunit', '--tid', String(tid), '--lun', String(lun),
      '--backing-store', backingStore, '--bstype', 'rdwr', ...(directIo ? ['--bsoflags', 'direct'] : []),
    ]); // prettier-ignore
  }

  /** Removes a target (closing its sessions) and its CHAP accounts; absent ones are not an error. */
  async deleteTarget(tid: number, ...accounts: Array<string | undefined>): Promise<void> {
    await this.adm(['--op', 'delete', '--mode', 'target', '--tid', String(tid), '--force']).catch((err: Error) => {
      if (!/can't find the target|no such target/i.test(err.message)) throw err;
    });
    for (const a of accounts) if (a) await this.deleteAccount(a);
  }

  async deleteAccount(user: string): Promise<void> {
    await this.adm(['--mode', 'account', '--op', 'delete', '--user', user]).catch((err: Error) => {
      if (!/can't find the account|no such|not found/i.test(err.message)) throw err;
    });
  }

  /** Stops tgtd (it refuses while targets exist: delete them first). */
  async shutdown(): Promise<void> {
    await this.adm(['--op', 'delete', '--mode', 'system']);
  }

  /** Raw ACL edit, for tests that show what tgt's lists do. */
  async bindAcl(tid: number, by: 'address' | 'name', value: string): Promise<void> {
    await this.adm(['--op', 'bind', '--mode', 'target', '--tid', String(tid), by === 'address' ? '--initiator-address' : '--initiator-name', value]);
  }
}

/** Parses `tgtadm --op show --mode target`: sections by indentation (4 spaces per level). */
export function parseTargets(text: string): TgtTarget[] {
  const out: TgtTarget[] = [];
  let cur: TgtTarget | null = null;
  let section = '';
  let lun: number | null = null;
  for (const line of text.split('\n')) {
    const m = /^Target (\d+): (\S+)$/.exec(line);
    if (m) {
      cur = { tid: Number(m[1]), iqn: m[2]!, luns: new Map(), accounts: [], acl: [], sessions: [] };
      out.push(cur);
      section = '';
      continue;
    }
    if (!cur) continue;
    const depth = line.length - line.trimStart().length;
    const s = line.trim();
    if (!s) continue;
    if (depth === 4) {
      section = s.replace(/:$/, '');
      lun = null;
      continue;
    }
    if (section === 'LUN information') {
      const l = /^LUN: (\d+)$/.exec(s);
      if (l) lun = Number(l[1]);
      const b = /^Backing store path: (.+)$/.exec(s);
      if (b && lun !== null && lun > 0 && b[1] !== 'None') cur.luns.set(lun, b[1]!);
    } else if (section === 'Account information' && depth === 8) {
      cur.accounts.push(s.replace(/ \(outgoing\)$/, ''));
    } else if (section === 'ACL information' && depth === 8) {
      cur.acl.push(s);
    } else if (section === 'I_T nexus information') {
      const i = /^Initiator: (\S+)/.exec(s);
      if (i) cur.sessions.push({ initiator: i[1]! });
      const a = /^IP Address: (\S+)/.exec(s);
      if (a && cur.sessions.length) cur.sessions[cur.sessions.length - 1]!.ip = a[1]!;
    }
  }
  return out;
}

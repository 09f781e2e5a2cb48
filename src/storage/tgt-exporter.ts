import { log } from '../log.js';
import { StorageError } from './disk-store.js';
import type { Tgtadm, TgtTarget } from './tgtadm.js';

/** One lease's target: LUN 1 = its disk (LUN 2 = its data disk, if any), visible to one initiator name, behind one CHAP account. */
export interface IscsiTarget {
  tid: number;
  iqn: string;
  /** Backing-store file of LUN 1. */
  disk: string;
  /** Backing-store file of LUN 2: a second, blank disk (a shared board's Docker data-root), or none. */
  dataDisk?: string;
  initiator: string;
  /** When set, the ACL admits this source address alone instead of the initiator name (tgtadm.ts). */
  initiatorAddress?: string;
  chapUser: string;
  chapSecret: string;
  /** Mutual CHAP: the target's own account (tgt "outgoing"), checked by the initiator. */
  targetUser?: string;
  targetSecret?: string;
}

export interface ExportedTarget {
  tid: number;
  iqn: string;
  /** LUN 1's backing store. */
  disk?: string;
  /** LUN 2's backing store, when the target has one. */
  dataDisk?: string;
  acl: string[];
  accounts: string[];
  sessions: Array<{ initiator: string; ip?: string }>;
}

/** The iSCSI target seam (DESIGN.md): every implementation is listed in TARGET_EXPORTERS (exporters.ts) and runs test/storage/target-exporter.contract.test.ts. */
export interface TargetExporter {
  /** Where initiators connect. */
  readonly portal: { ip: string; port: number };
  /** Make the target exist exactly as described; an existing different one (same iqn or tid) is replaced. */
  ensure(t: IscsiTarget): Promise<'created' | 'unchanged' | 'replaced'>;
  /** Remove the target named `iqn` and its CHAP accounts (`accounts`, and whatever it has bound); false when there was none. */
  remove(iqn: string, ...accounts: Array<string | undefined>): Promise<boolean>;
  list(): Promise<ExportedTarget[]>;
  /** The lowest target id neither tgtd nor `taken` uses. */
  freeTid(taken: Iterable<number>): Promise<number>;
}

/** TargetExporter over tgtd (through Tgtadm, which alone knows tgtadm's syntax). */
export class TgtExporter implements TargetExporter {
  constructor(
    private readonly adm: Tgtadm,
    readonly portal: { ip: string; port: number },
    private readonly opts: { directIo?: boolean } = {},
  ) {}

  async ensure(t: IscsiTarget): Promise<'created' | 'unchanged' | 'replaced'> {
    const targets = await this.adm.targets();
    const same = targets.find((x) => x.iqn === t.iqn);
    if (same && matches(same, t)) return 'unchanged';
    const clash = targets.filter((x) => x.iqn === t.iqn || x.tid === t.tid);
    for (const c of clash) {
      log.warn({ tid: c.tid, iqn: c.iqn }, 'tgt: replacing a target that differs from the record');
      await this.adm.deleteTarget(c.tid);
    }
    try {
      await this.adm.createTarget({ ...t, backingStore: t.disk, dataBackingStore: t.dataDisk, initiatorName: t.initiator, initiatorAddress: t.initiatorAddress, directIo: this.opts.directIo });
    } catch (err) {
      throw new StorageError('EXPORT_FAILED', `tgtd refused target ${t.iqn} (tid ${t.tid}) for ${t.disk}${t.dataDisk ? ` and ${t.dataDisk}` : ''}: ${(err as Error).message}`, { cause: err });
    }
    return clash.length ? 'replaced' : 'created';
  }

  async remove(iqn: string, ...accounts: Array<string | undefined>): Promise<boolean> {
    const t = (await this.adm.targets()).find((x) => x.iqn === iqn);
    const all = [...new Set([...accounts, ...(t?.accounts ?? [])])];
    if (t) await this.adm.deleteTarget(t.tid, ...all);
    else for (const a of all) if (a) await this.adm.deleteAccount(a);
    return !!t;
  }

  async list(): Promise<ExportedTarget[]> {
    return (await this.adm.targets()).map((t) => ({ tid: t.tid, iqn: t.iqn, disk: t.luns.get(1), dataDisk: t.luns.get(2), acl: t.acl, accounts: t.accounts, sessions: t.sessions }));
  }

  async freeTid(taken: Iterable<number>): Promise<number> {
    const used = new Set([...taken, ...(await this.adm.targets()).map((t) => t.tid)]);
    let tid = 1;
    while (used.has(tid)) tid++;
    return tid;
  }
}

/** Complete and as recorded: same tid, LUN 1 on the disk, LUN 2 on the data disk or none, the initiator's ACL, the CHAP account. */
function matches(x: TgtTarget, t: IscsiTarget): boolean {
  return x.tid === t.tid && x.luns.get(1) === t.disk && x.luns.get(2) === t.dataDisk && x.acl.length === 1 && x.acl[0] === (t.initiatorAddress ?? t.initiator) && x.accounts.includes(t.chapUser) && (!t.targetUser || x.accounts.includes(t.targetUser));
}

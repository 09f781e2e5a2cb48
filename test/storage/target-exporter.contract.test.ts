/**
 * One contract for every TargetExporter in TARGET_EXPORTERS (src/storage/exporters.ts), each built
 * through the registry and run against the real thing: `tgt` on a tgtd of its own. What a target
 * looks like in list() after ensure(), when ensure() creates, leaves or replaces, what remove() takes
 * with it, and which tid freeTid() gives. Logins by real initiators (ACLs, CHAP) are tgt.test.ts's.
 */
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { storageConfigSchema } from '../../src/storage/config.js';
import { StorageError } from '../../src/storage/disk-store.js';
import { TARGET_EXPORTERS, targetExporter } from '../../src/storage/exporters.js';
import { TgtDaemon } from '../../src/storage/tgt-daemon.js';
import type { ExportedTarget, IscsiTarget, TargetExporter } from '../../src/storage/tgt-exporter.js';
import { TgtIpc } from '../../src/storage/tgt-ipc.js';
import { requireRoot, requireTools } from '../helpers/tools.js';
import { freeControlPort, freePort } from './tgt-fixture.js';

const PREFIX = 'iqn.2026-11.cloud.dozen';
const work = mkdtempSync(join(tmpdir(), 'dzn-exporter-'));
const cleanups: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch((err: unknown) => console.error('cleanup failed:', err));
  rmSync(work, { recursive: true, force: true });
});

interface Harness {
  exporter: TargetExporter;
  /** The portal the service behind the exporter was set up with. */
  portal: { ip: string; port: number };
  /** Every CHAP account the service holds, bound to a target or not. */
  accounts(): Promise<string[]>;
  /** An account bound to no target, as a crash between two steps leaves one. */
  strayAccount(user: string, secret: string): Promise<void>;
}

const harnesses: Record<string, () => Promise<Harness>> = {
  async tgt() {
    requireRoot();
    requireTools('tgtd', 'tgtadm');
    const daemon = new TgtDaemon({ controlPort: freeControlPort(), portalIp: '127.0.0.1', portalPort: await freePort() });
    await daemon.start();
    cleanups.push(() => daemon.stop()); // deletes what is left (targets, accounts), then ends tgtd
    const controlPort = daemon.adm.controlPort;
    const ipc = new TgtIpc(controlPort);
    return {
      exporter: targetExporter({ driver: 'tgt', controlPort, portalIp: daemon.portal.ip, portalPort: daemon.portal.port }),
      portal: daemon.portal,
      accounts: () => daemon.adm.accounts(),
      strayAccount: (user, secret) => ipc.newAccount(user, secret),
    };
  },
};

/** A small sparse backing file. */
function disk(name: string, mib = 8): string {
  const p = join(work, name);
  writeFileSync(p, '');
  truncateSync(p, mib * 1024 * 1024);
  return p;
}

function target(board: string, lease: string, tid: number, mutual = false): IscsiTarget {
  return {
    tid,
    iqn: `${PREFIX}:${board}.${lease}`,
    disk: disk(`${lease}.img`),
    initiator: `${PREFIX}:${board}`,
    chapUser: lease,
    chapSecret: `S3cret${lease}xyzw12345`,
    ...(mutual ? { targetUser: `${lease}-target`, targetSecret: `T4rget${lease}xyzw12345` } : {}),
  };
}

/** What list() must show for a target ensure() was given: LUN 1 on its disk, LUN 2 on its data disk (if any), one ACL entry, its accounts, no sessions. */
function shown(t: IscsiTarget): ExportedTarget {
  return { tid: t.tid, iqn: t.iqn, disk: t.disk, ...(t.dataDisk ? { dataDisk: t.dataDisk } : {}), acl: [t.initiatorAddress ?? t.initiator], accounts: accountsOf(t), sessions: [] };
}

const accountsOf = (t: IscsiTarget) => [t.chapUser, ...(t.targetUser ? [t.targetUser] : [])].sort();

/** list() in a comparable order: by tid, accounts sorted (the interface promises neither order). */
async function listed(ex: TargetExporter): Promise<ExportedTarget[]> {
  return (await ex.list()).map((t) => ({ ...t, accounts: [...t.accounts].sort() })).sort((x, y) => x.tid - y.tid);
}

for (const [name, make] of Object.entries(harnesses)) {
  describe(`target exporter contract: ${name}`, () => {
    let h: Harness;
    let ex: TargetExporter;
    /** Accounts of descriptions that were replaced: ensure() does not promise to drop them; the end removes them. */
    const replacedAccounts: string[] = [];
    let a = target('bpi-1', 'l-aaaa', 1);
    const b = target('bpi-2', 'l-bbbb', 2, true);
    let d: IscsiTarget;
    let e: IscsiTarget;

    beforeAll(async () => {
      h = await make();
      ex = h.exporter;
    });

    it('starts empty; ensure() creates each target as described and list() shows tid, iqn, LUN 1, ACL and accounts', async () => {
      expect(ex.portal).toEqual(h.portal);
      expect(await ex.list()).toEqual([]);
      expect(await h.accounts()).toEqual([]);
      expect(await ex.ensure(a)).toBe('created');
      expect(await ex.ensure(b)).toBe('created');
      expect(await listed(ex)).toEqual([shown(a), shown(b)]);
      expect((await h.accounts()).sort()).toEqual(['l-aaaa', 'l-bbbb', 'l-bbbb-target']);
    });

    it('ensure() of the same description again is unchanged', async () => {
      const before = await listed(ex);
      expect(await ex.ensure(a)).toBe('unchanged');
      expect(await ex.ensure({ ...b })).toBe('unchanged');
      expect(await listed(ex)).toEqual(before);
    });

    it('a description that differs from the target of its iqn replaces it: disk, tid, initiator, CHAP account, mutual CHAP', async () => {
      // Each change on top of the one before.
      const changes: Array<[string, (t: IscsiTarget) => IscsiTarget]> = [
        ['disk', (t) => ({ ...t, disk: disk('l-aaaa-new.img', 4) })],
        ['tid', (t) => ({ ...t, tid: 3 })],
        ['initiator', (t) => ({ ...t, initiator: `${PREFIX}:bpi-1b` })],
        ['CHAP account', (t) => ({ ...t, chapUser: 'l-aaaa2', chapSecret: 'S3cretl-aaaa2xyzw1234' })],
        ['mutual CHAP', (t) => ({ ...t, targetUser: 'l-aaaa2-target', targetSecret: 'T4rgetl-aaaa2xyzw123' })],
      ];
      for (const [what, change] of changes) {
        const next = change(a);
        replacedAccounts.push(...accountsOf(a));
        expect([what, await ex.ensure(next)]).toEqual([what, 'replaced']);
        a = next;
        // The new description, alone under its iqn; b untouched.
        expect([what, await listed(ex)]).toEqual([what, [shown(a), shown(b)].sort((x, y) => x.tid - y.tid)]);
        expect([what, await ex.ensure(a)]).toEqual([what, 'unchanged']);
      }
      expect(a.tid).toBe(3); // the changes added up: the tests below count on a at tid 3
    });

    it('a description of another iqn replaces the target that holds its tid; one clashing with two targets replaces both', async () => {
      const c = target('bpi-3', 'l-cccc', b.tid);
      replacedAccounts.push(...accountsOf(b));
      expect(await ex.ensure(c)).toBe('replaced');
      expect(await listed(ex)).toEqual([shown(c), shown(a)]); // c at tid 2 instead of b, a at 3
      // c's iqn at a's tid: both c (same iqn) and a (same tid) give way.
      d = { ...target('bpi-4', 'l-dddd', a.tid, true), iqn: c.iqn };
      replacedAccounts.push(...accountsOf(c), ...accountsOf(a));
      expect(await ex.ensure(d)).toBe('replaced');
      expect(await listed(ex)).toEqual([shown(d)]);
    });

    it('the ACL is what the description says: its address alone when it has one, else its initiator name', async () => {
      e = { ...target('bpi-5', 'l-eeee', 5), initiatorAddress: '127.0.0.2' };
      expect(await ex.ensure(e)).toBe('created');
      const acl = async () => (await ex.list()).find((t) => t.iqn === e.iqn)?.acl;
      expect(await acl()).toEqual(['127.0.0.2']);
      expect(await ex.ensure(e)).toBe('unchanged');
      expect(await ex.ensure({ ...e, initiatorAddress: '127.0.0.3' })).toBe('replaced');
      expect(await acl()).toEqual(['127.0.0.3']);
      expect(await ex.ensure({ ...e, initiatorAddress: undefined })).toBe('replaced');
      expect(await acl()).toEqual([e.initiator]);
      expect(await ex.ensure({ ...e, initiatorAddress: undefined })).toBe('unchanged');
      expect(await ex.ensure(e)).toBe('replaced');
      expect(await listed(ex)).toEqual([shown(d), shown(e)]);
    });

    it('freeTid() gives the lowest tid that neither a target nor `taken` uses', async () => {
      expect((await ex.list()).map((t) => t.tid).sort()).toEqual([3, 5]);
      expect(await ex.freeTid([])).toBe(1);
      expect(await ex.freeTid([2])).toBe(1);
      expect(await ex.freeTid([1])).toBe(2);
      expect(await ex.freeTid([1, 2])).toBe(4); // 3 is d's
      expect(await ex.freeTid(new Set([2, 1, 4]))).toBe(6); // 5 is e's
    });

    it('a target the service refuses is an EXPORT_FAILED StorageError and leaves nothing behind', async () => {
      const before = await listed(ex);
      const accounts = (await h.accounts()).sort();
      const bad = { ...target('bpi-6', 'l-ffff', 6), disk: join(work, 'no-such-disk.img') };
      const err = await ex.ensure(bad).then(
        () => null,
        (x: unknown) => x,
      );
      expect(err).toBeInstanceOf(StorageError);
      expect((err as StorageError).code).toBe('EXPORT_FAILED');
      expect((err as Error).message).toContain(bad.iqn);
      expect(await listed(ex)).toEqual(before);
      expect((await h.accounts()).sort()).toEqual(accounts);
    });

    it('a data disk is LUN 2: list() shows it, and a target lacking it, or with another, is replaced', async () => {
      const before = await listed(ex);
      const plain = target('bpi-8', 'l-gggg', 7, true);
      expect(await ex.ensure(plain)).toBe('created');
      const lun2 = (t: ExportedTarget | undefined) => t && { disk: t.disk, dataDisk: t.dataDisk };
      const find = async () => (await listed(ex)).find((t) => t.iqn === plain.iqn);
      expect(lun2(await find())).toEqual({ disk: plain.disk, dataDisk: undefined });
      // The record gains a data disk: the target without LUN 2 gives way to one with it.
      const withData = { ...plain, dataDisk: disk('l-gggg-data.img', 16) };
      expect(await ex.ensure(withData)).toBe('replaced');
      expect(await find()).toEqual(shown(withData));
      expect(lun2(await find())).toEqual({ disk: plain.disk, dataDisk: withData.dataDisk });
      expect(await ex.ensure({ ...withData })).toBe('unchanged');
      const otherData = { ...withData, dataDisk: disk('l-gggg-data2.img', 8) };
      expect(await ex.ensure(otherData)).toBe('replaced');
      expect(lun2(await find())).toEqual({ disk: plain.disk, dataDisk: otherData.dataDisk });
      // And back: a target with a LUN 2 the record does not have is replaced too.
      expect(await ex.ensure(plain)).toBe('replaced');
      expect(await find()).toEqual(shown(plain));
      expect(lun2(await find())).toEqual({ disk: plain.disk, dataDisk: undefined });
      // A data disk the service cannot open fails the whole target, leaving nothing.
      const badData = { ...target('bpi-9', 'l-hhhh', 8), dataDisk: join(work, 'no-such-data.img') };
      const err = await ex.ensure(badData).then(
        () => null,
        (x: unknown) => x,
      );
      expect(err).toBeInstanceOf(StorageError);
      expect((err as StorageError).code).toBe('EXPORT_FAILED');
      expect((err as Error).message).toContain(badData.iqn);
      expect((await listed(ex)).map((t) => t.iqn)).not.toContain(badData.iqn);
      expect(await h.accounts()).not.toContain(badData.chapUser);
      expect(await ex.remove(plain.iqn)).toBe(true);
      expect(await listed(ex)).toEqual(before);
    });

    it('remove() takes the target and its accounts, the ones given and the ones bound; a second remove() is false', async () => {
      expect(await ex.remove(d.iqn, d.chapUser, d.targetUser)).toBe(true);
      expect(await listed(ex)).toEqual([shown(e)]);
      let accounts = await h.accounts();
      expect(accounts).not.toContain(d.chapUser);
      expect(accounts).not.toContain(d.targetUser);
      expect(accounts).toContain(e.chapUser); // another target's account stays
      expect(await ex.remove(d.iqn, d.chapUser, d.targetUser)).toBe(false);
      expect(await listed(ex)).toEqual([shown(e)]);

      // No account named: the ones the target has bound go with it.
      expect(await ex.remove(e.iqn)).toBe(true);
      expect(await ex.list()).toEqual([]);
      expect(await h.accounts()).not.toContain(e.chapUser);

      // No target (any more): the accounts given still go.
      await h.strayAccount('l-stray', 'S3cretl-strayxyzw12345');
      expect(await h.accounts()).toContain('l-stray');
      expect(await ex.remove(`${PREFIX}:bpi-7.l-stray`, 'l-stray', undefined)).toBe(false);
      accounts = await h.accounts();
      expect(accounts).not.toContain('l-stray');

      // And with that, nothing is left: the accounts of replaced targets are named like strays.
      expect(await ex.remove(`${PREFIX}:gone`, ...replacedAccounts)).toBe(false);
      expect(await h.accounts()).toEqual([]);
      expect(await ex.list()).toEqual([]);
      expect(await ex.freeTid([])).toBe(1);
    });
  });
}

describe('target exporter registry', () => {
  it('every registered exporter runs the contract above', () => {
    expect(Object.keys(TARGET_EXPORTERS).sort()).toEqual(Object.keys(harnesses).sort());
  });

  it('an unknown exporter, or bad parameters, say what is wrong', () => {
    for (const driver of ['lio', 'constructor', 'toString']) {
      expect(() => targetExporter({ driver })).toThrow(new RegExp(`unknown target exporter "${driver}" \\(known: tgt\\)`));
    }
    expect(() => targetExporter({ driver: 'tgt', portalIp: '10.77.0.1' })).toThrow(/bad parameters for target exporter "tgt"[\s\S]*controlPort/);
    expect(() => targetExporter({ driver: 'tgt', controlPort: 0, portalIp: '10.77.0.1' })).toThrow(/bad parameters for target exporter "tgt"[\s\S]*controlPort/);
    expect(() => targetExporter({ driver: 'tgt', controlPort: 32768, portalIp: '10.77.0.1' })).toThrow(/bad parameters for target exporter "tgt"[\s\S]*controlPort/);
    expect(() => targetExporter({ driver: 'tgt', controlPort: 7, portalIp: 'boot-net' })).toThrow(/bad parameters for target exporter "tgt"[\s\S]*portalIp/);
    expect(() => targetExporter({ driver: 'tgt', controlPort: 7, portalIp: '10.77.0.1', directIo: 'yes' })).toThrow(/bad parameters for target exporter "tgt"[\s\S]*directIo/);
  });

  it('the storage config’s tgt section, defaults included, is a valid tgt spec', () => {
    const cfg = storageConfigSchema.parse({});
    expect(targetExporter({ driver: 'tgt', ...cfg.tgt, portalIp: '10.77.0.1' }).portal).toEqual({ ip: '10.77.0.1', port: 3260 });
    expect(targetExporter({ driver: 'tgt', controlPort: 7, portalIp: '10.77.0.1' }).portal).toEqual({ ip: '10.77.0.1', port: 3260 });
    const custom = storageConfigSchema.parse({ tgt: { controlPort: 32767, portalPort: 13260, directIo: true } });
    expect(targetExporter({ driver: 'tgt', ...custom.tgt, portalIp: '192.0.2.1' }).portal).toEqual({ ip: '192.0.2.1', port: 13260 });
  });
});

import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Store } from '../../src/store/store.js';
import { SCHEMA_VERSION } from '../../src/store/schema.js';

/** These tests read state.json as the whole state: below the journal's threshold, as a lab's state is. */
const WHOLE = { journalAboveBytes: Number.MAX_SAFE_INTEGER };
const dir = () => mkdtempSync(join(tmpdir(), 'store-'));
const board = (id: string) => ({
  id,
  mac: '02:00:00:00:00:0' + id.length,
  model: 'bananapi',
  arch: 'armv7' as const,
  ip: '10.0.0.5',
  power: { driver: 'qemu', qmp: '/x' },
  image: 'test',
  state: 'available' as const,
  createdAt: new Date().toISOString(),
});

describe('state store', () => {
  it('creates a versioned file and persists each update before resolving', async () => {
    const d = dir();
    const s = await Store.open(join(d, 'state.json'), WHOLE);
    await s.update((st) => st.boards.push(board('a')));
    const onDisk = JSON.parse(readFileSync(join(d, 'state.json'), 'utf8'));
    expect(onDisk.version).toBe(SCHEMA_VERSION);
    expect(onDisk.boards.map((b: { id: string }) => b.id)).toEqual(['a']);
    expect(readdirSync(d).filter((f) => f.endsWith('.tmp'))).toEqual([]); // no temp files left behind
    await s.close();
    const again = await Store.open(join(d, 'state.json'), WHOLE);
    expect(again.state.boards[0]!.id).toBe('a');
    await again.close();
  });

  it('runs concurrent updates one at a time, each seeing the last; each resolves once it is on disk; they share writes', async () => {
    const d = dir();
    const s = await Store.open(join(d, 'state.json'), WHOLE);
    const file = join(d, 'state.json');
    const counts = (st: { discovered: Array<{ count: number }> }) => st.discovered.map((x) => x.count);
    const onDisk = () => counts(JSON.parse(readFileSync(file, 'utf8')));
    // What each mutation saw in memory when it ran (all the earlier ones, in order), and the file when its promise resolved.
    const seen: Array<{ i: number; memory: number[] }> = [];
    const durable: Array<{ i: number; onDisk: boolean }> = [];
    await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        s
          .update((st) => {
            seen.push({ i, memory: counts(st) });
            st.discovered.push({ mac: `02:00:00:00:01:${(i + 16).toString(16)}`, firstSeen: 'x', lastSeen: 'x', count: i });
            return i;
          })
          .then((r) => durable.push({ i: r, onDisk: onDisk().includes(i) })),
      ),
    );
    const upTo = (n: number) => Array.from({ length: n }, (_, k) => k);
    expect(seen).toEqual(upTo(50).map((i) => ({ i, memory: upTo(i) })));
    expect(durable.sort((a, b) => a.i - b.i)).toEqual(upTo(50).map((i) => ({ i, onDisk: true })));
    expect(counts(s.state)).toEqual(upTo(50));
    expect(onDisk()).toEqual(upTo(50)); // the last write on disk is the last update, not an earlier one
    // Group commit: 50 concurrent updates took far fewer than 50 durable writes.
    expect(s.stats.updates).toBe(50);
    expect(s.stats.writes).toBeLessThanOrEqual(5);
    await s.close();
  });

  it('a mutation that throws among concurrent ones loses only its own change', async () => {
    const d = dir();
    const s = await Store.open(join(d, 'state.json'), WHOLE);
    const ids = (st: { boards: Array<{ id: string }> }) => st.boards.map((b) => b.id);
    const results = await Promise.allSettled([
      s.update((st) => void st.boards.push(board('a'))),
      s.update((st) => {
        st.boards.push(board('bb'));
        throw new Error('nope');
      }),
      s.update((st) => void st.boards.push(board('ccc'))),
      s.update((st) => {
        st.boards.splice(0); // a partial change, then a failure: all of it undone
        throw new Error('again');
      }),
    ]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled', 'rejected']);
    expect(ids(s.state)).toEqual(['a', 'ccc']);
    expect(ids(JSON.parse(readFileSync(join(d, 'state.json'), 'utf8')))).toEqual(['a', 'ccc']);
    await s.close();
  });

  it('no copy per change: after a change throws, the batch’s earlier ones are applied again on the state as on disk', async () => {
    const d = dir();
    const s = await Store.open(join(d, 'state.json'), WHOLE);
    await s.update((st) => void st.boards.push(board('a')));
    let runs = 0;
    const [first, second] = await Promise.allSettled([
      s.update((st) => {
        runs++;
        st.boards.push(board('bb'));
        return st.boards.length;
      }),
      s.update((st) => {
        st.boards[0]!.image = 'changed, then thrown away';
        throw new Error('nope');
      }),
    ]);
    expect([first, second.status]).toEqual([{ status: 'fulfilled', value: 2 }, 'rejected']);
    expect(runs).toBe(2); // applied, then applied again once the failed one was undone
    expect(s.state.boards.map((b) => [b.id, b.image])).toEqual([['a', 'test'], ['bb', 'test']]);
    await s.close();
  });

  it('a write that fails rejects every mutation it carried and leaves memory as on disk', async () => {
    const d = dir();
    const file = join(d, 'state.json');
    const s = await Store.open(file, WHOLE);
    await s.update((st) => void st.boards.push(board('a')));
    rmSync(d, { recursive: true }); // the next write cannot create its temp file
    const results = await Promise.allSettled([s.update((st) => void st.boards.push(board('bb'))), s.update((st) => void st.boards.push(board('ccc')))]);
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected']);
    expect(s.state.boards.map((b) => b.id)).toEqual(['a']);
    mkdirSync(d);
    await s.update((st) => void st.boards.push(board('dddd'))); // the store works again, from the state before the failure
    expect(JSON.parse(readFileSync(file, 'utf8')).boards.map((b: { id: string }) => b.id)).toEqual(['a', 'dddd']);
  });

  it('a failed mutation leaves memory and disk unchanged', async () => {
    const d = dir();
    const s = await Store.open(join(d, 'state.json'), WHOLE);
    await s.update((st) => st.boards.push(board('a')));
    await expect(
      s.update((st) => {
        st.boards.push(board('bb'));
        throw new Error('nope');
      }),
    ).rejects.toThrow('nope');
    expect(s.state.boards.map((b) => b.id)).toEqual(['a']);
    expect(JSON.parse(readFileSync(join(d, 'state.json'), 'utf8')).boards.map((b: { id: string }) => b.id)).toEqual(['a']);
    await s.update((st) => st.boards.push(board('c'))); // the store still works, from the state before the failure
    expect(JSON.parse(readFileSync(join(d, 'state.json'), 'utf8')).boards.map((b: { id: string }) => b.id)).toEqual(['a', 'c']);
    await s.close();
  });

  it('refuses a corrupt file, naming it, and leaves it untouched', async () => {
    const d = dir();
    const file = join(d, 'state.json');
    writeFileSync(file, '{"version":1,"boards":[');
    await expect(Store.open(file, WHOLE)).rejects.toThrow(new RegExp(`state file ${file} is not valid JSON`));
    expect(readFileSync(file, 'utf8')).toBe('{"version":1,"boards":[');
  });

  it('refuses a file that does not match the schema, naming the field', async () => {
    const d = dir();
    const file = join(d, 'state.json');
    writeFileSync(file, JSON.stringify({ version: 1, boards: [{ ...board('a'), mac: 'nope' }], discovered: [] })); // migrated to v2 first, then checked
    await expect(Store.open(file, WHOLE)).rejects.toThrow(/does not match the schema[\s\S]*mac/);
  });

  it('refuses a file from a newer server', async () => {
    const d = dir();
    const file = join(d, 'state.json');
    writeFileSync(file, JSON.stringify({ version: SCHEMA_VERSION + 1, boards: [], discovered: [] }));
    await expect(Store.open(file, WHOLE)).rejects.toThrow(/newer than this server/);
  });

  it('allows one writer at a time; a dead writer’s lock is taken over', async () => {
    const d = dir();
    const file = join(d, 'state.json');
    const s = await Store.open(file, WHOLE);
    await expect(Store.open(file, WHOLE)).rejects.toThrow(/already open/);
    await s.close();
    writeFileSync(`${file}.lock`, String(process.ppid)); // another live process holds it
    await expect(Store.open(file, WHOLE)).rejects.toThrow(/in use by process/);
    writeFileSync(`${file}.lock`, '999999'); // no such process
    const t = await Store.open(file, WHOLE);
    await t.close();
  });
});

describe('state migrations', () => {
  it('upgrades a version 1 file, keeping its boards', async () => {
    const d = dir();
    const file = join(d, 'state.json');
    writeFileSync(file, JSON.stringify({ version: 1, boards: [board('a')], discovered: [] }));
    const s = await Store.open(file, WHOLE);
    expect(s.state.version).toBe(SCHEMA_VERSION);
    expect(s.state.boards.map((b) => b.id)).toEqual(['a']);
    expect(s.state.leases).toEqual([]);
    await s.close();
    expect(JSON.parse(readFileSync(file, 'utf8')).version).toBe(SCHEMA_VERSION);
  });
});

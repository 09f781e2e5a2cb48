/**
 * The state journal (src/store/journal.ts, src/store/store.ts): a batch's changes are recorded without a
 * diff of the whole state, and snapshot + journal always replay to what memory holds. Checked with the
 * mutation shapes the server uses (push, find-and-change, index writes, filter-and-reassign, capped
 * splices, nested arrays, deleted fields, sort), in random order and batches, against the store's own
 * check (verify) and a reopen from disk, plus a crash at every point of the files' life.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { applyOps, Shadows, track, type Op } from '../../src/store/journal.js';
import { Store } from '../../src/store/store.js';
import type { State } from '../../src/store/schema.js';

const work = mkdtempSync(join(tmpdir(), 'journal-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));
let n = 0;
const file = () => join(mkdtempSync(join(work, `s${n++}-`)), 'state.json');

const board = (id: string, i = 0) => ({
  id, mac: `02:00:00:00:${(i >> 8).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`,
  model: 'bananapi', arch: 'armv7' as const, ip: `10.0.${i >> 8}.${i & 255}`,
  power: { driver: 'qemu', qmp: '/x' }, image: 'test', state: 'available' as const, createdAt: 'x',
});
const job = (id: string) => ({
  id, kind: 'provision' as const, leaseId: `l-${id}`, tenantId: 'ten', state: 'running' as const, createdAt: 'x', params: {},
  steps: [{ name: 'disk', state: 'pending' as const, attempts: 0 }, { name: 'power', state: 'pending' as const, attempts: 0 }],
});

/** A deterministic PRNG (mulberry32), so a failure names a seed that reproduces it. */
function rng(seed: number) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The mutation shapes of src/ (inventory, leases, jobs, tokens), picked by r. */
function mutation(r: () => number, k: number): (s: State) => unknown {
  const pick = Math.floor(r() * 12);
  return (s) => {
    const some = <T,>(a: T[]) => a[Math.floor(r() * a.length)];
    switch (pick) {
      case 0: return s.boards.push(board(`b${k}`, k));
      case 1: { const b = s.boards.find((x) => x.id === some(s.boards)?.id); if (b) b.state = 'active'; return b?.id; }
      case 2: { const i = s.boards.findIndex((x) => x.id === some(s.boards)?.id); if (i >= 0) s.boards[i] = { ...s.boards[i]!, image: `img${k}` }; return i; }
      case 3: { const gone = some(s.boards)?.id; s.boards = s.boards.filter((x) => x.id !== gone); return gone; }
      case 4: { s.transitions.push({ time: 'x', boardId: 'b', from: 'available', to: 'active', reason: `r${k}` }); if (s.transitions.length > 5) s.transitions.splice(0, s.transitions.length - 5); return; }
      case 5: return s.jobs.push(job(`j${k}`));
      case 6: { const j = s.jobs.find((x) => x.state === 'running'); if (j) { const st = j.steps.find((x) => x.state === 'pending'); if (st) { st.state = 'done'; st.attempts++; } else j.state = 'succeeded'; } return; }
      case 7: { const b = some(s.boards); if (b) { if (b.kernelArgs) delete b.kernelArgs; else b.kernelArgs = `maxcpus=${k}`; } return; }
      case 8: { for (const b of s.boards) if (b.state === 'active' && r() < 0.3) b.state = 'available'; return; }
      case 9: s.controllerId = `c${k}`; return;
      case 10: s.boards.sort((a, b) => (a.id < b.id ? 1 : -1)); return;
      default: { s.discovered.push({ mac: `02:00:00:01:00:${(k & 255).toString(16).padStart(2, '0')}`, firstSeen: 'x', lastSeen: 'x', count: 1 }); if (s.discovered.length > 3) s.discovered.splice(0, 1); return; }
    }
  };
}

describe('journal ops (track → encode → applyOps)', () => {
  it('replays each kind of change on a parsed copy to the same state, recording only what changed', () => {
    const state: any = { version: 2, boards: [board('a', 1), board('b', 2), board('c', 3)], jobs: [job('j')], tr: [1, 2, 3] };
    const shadows = new Shadows();
    for (const b of state.boards) shadows.set(b, JSON.stringify(b)); // as after a previous line
    for (const j of state.jobs) shadows.set(j, JSON.stringify(j));
    const copy = JSON.parse(JSON.stringify(state));
    const t = track(state);
    const s = t.root;
    s.boards.find((b: any) => b.id === 'b').state = 'active'; // found and changed
    s.boards.find((b: any) => b.id === 'c'); // found, not changed: not recorded
    s.jobs[0].steps[1].state = 'done'; // nested
    s.boards.push(board('d', 4));
    s.tr.splice(0, 1);
    s.controllerId = 'x';
    const line = t.encode(shadows)!;
    const ops = JSON.parse(line) as Op[];
    expect(ops.filter((o) => 'put' in o).map((o: any) => [o.c, o.put])).toEqual([['boards', 1], ['jobs', 0]]);
    applyOps(copy, ops);
    expect(copy).toEqual(JSON.parse(JSON.stringify(state)));
  });

  it('records nothing for a batch that only reads', () => {
    const state: any = { version: 2, boards: [board('a')] };
    const shadows = new Shadows();
    shadows.set(state.boards[0], JSON.stringify(state.boards[0]));
    const t = track(state);
    expect(t.root.boards.some((b: any) => b.id === 'a')).toBe(true);
    for (const b of t.root.boards) void b.id;
    expect(t.encode(shadows)).toBeNull();
  });

  it('refuses a line that does not fit the state (a journal from elsewhere)', () => {
    expect(() => applyOps({ boards: [] }, [{ c: 'boards', put: 3, v: {} }])).toThrow(/past the end/);
    expect(() => applyOps({}, [{ c: 'boards', push: [1] }])).toThrow(/not a collection/);
  });
});

describe('the store on a journal', () => {
  for (const seed of [1, 2, 3, 4, 5, 6]) {
    it(`random mutations in random batches replay from disk exactly (seed ${seed})`, async () => {
      const path = file();
      const r = rng(seed);
      const s = await Store.open(path, { journalAboveBytes: 0, verify: true });
      let k = 0;
      for (let round = 0; round < 40; round++) {
        const batch = Array.from({ length: 1 + Math.floor(r() * 6) }, () => {
          const fn = mutation(r, k++);
          // now and then a change that fails halfway: nothing of it may stay, in memory or on disk
          if (r() < 0.1) return s.update((st) => { fn(st); st.boards.push(board('never', 999)); throw new Error('refused'); }).catch((e: Error) => e.message);
          return s.update(fn);
        });
        const results = await Promise.all(batch);
        expect(results.filter((x) => typeof x === 'string' && x !== 'refused' && x.startsWith('state journal'))).toEqual([]);
      }
      expect(s.stats.appends).toBeGreaterThan(10);
      expect(s.state.boards.some((b) => b.id === 'never')).toBe(false);
      const memory = JSON.parse(JSON.stringify(s.state));
      // A crash: no close, the journal as it is. A second store may not open it while the lock's owner lives,
      // so take the files as a kill -9 leaves them, beside it.
      const crashed = join(mkdtempSync(join(work, 'crash-')), 'state.json');
      writeFileSync(crashed, readFileSync(path));
      writeFileSync(`${crashed}.journal`, readFileSync(`${path}.journal`));
      const again = await Store.open(crashed);
      expect(again.state).toEqual(memory);
      await again.close();
      await s.close();
      expect(statSync(`${path}.journal`).size).toBe(0); // close folds the journal into the file
      expect(JSON.parse(readFileSync(path, 'utf8')).boards).toEqual(memory.boards);
    });
  }

  it('a small state is one whole file per change; past journalAboveBytes changes go to the journal', async () => {
    const path = file();
    const s = await Store.open(path, { journalAboveBytes: 10_000, verify: true });
    await s.update((st) => void st.boards.push(board('a')));
    expect(statSync(`${path}.journal`).size).toBe(0);
    expect(JSON.parse(readFileSync(path, 'utf8')).boards).toHaveLength(1);
    await s.update((st) => void st.boards.push(...Array.from({ length: 100 }, (_, i) => board(`x${i}`, i)))); // the file passes 10 kB
    const before = s.stats.snapshots;
    await s.update((st) => void (st.boards.find((b) => b.id === 'x7')!.image = 'changed'));
    expect(s.stats.snapshots).toBe(before); // appended, not rewritten
    const line = readFileSync(`${path}.journal`, 'utf8');
    expect(line).toMatch(/^\{"seq":\d+,"ops":\[\{"c":"boards","put":8,"v":\{[^\n]*"image":"changed"[^\n]*\}\]\}\n$/);
    expect(line.length).toBeLessThan(400); // the board that changed, not the rack
    await s.close();
  });

  it('rewrites the file once the journal is as large as it, so neither grows without bound', async () => {
    const path = file();
    const s = await Store.open(path, { journalAboveBytes: 0, verify: true });
    await s.update((st) => void st.boards.push(...Array.from({ length: 300 }, (_, i) => board(`x${i}`, i)))); // ~70 kB
    for (let i = 0; i < 600; i++) await s.update((st) => void (st.boards[i % 300]!.image = `i${i}`));
    expect(s.stats.snapshots).toBeGreaterThan(1);
    expect(statSync(`${path}.journal`).size).toBeLessThanOrEqual(Math.max(statSync(path).size, 64 * 1024) + 1000); // the journal's floor is 64 KiB
    await s.close();
  });

  it('after a crash: a torn last line is dropped, lines the file already holds are skipped, a gap or garbage is refused', async () => {
    const path = file();
    const s = await Store.open(path, { journalAboveBytes: 0 });
    await s.update((st) => void st.boards.push(board('a')));
    await s.update((st) => void st.boards.push(board('b', 1)));
    const snap = readFileSync(path, 'utf8');
    const journal = readFileSync(`${path}.journal`, 'utf8');
    expect(journal.split('\n')).toHaveLength(3); // two lines and the end
    const copy = (name: string, j: string, st = snap) => {
      const p = join(mkdtempSync(join(work, `${name}-`)), 'state.json');
      writeFileSync(p, st);
      writeFileSync(`${p}.journal`, j);
      return p;
    };
    // torn: the second line half written (its update never resolved): the first is kept
    const torn = copy('torn', journal.slice(0, journal.indexOf('\n') + 1) + journal.split('\n')[1]!.slice(0, 30));
    const t = await Store.open(torn);
    expect(t.state.boards.map((b) => b.id)).toEqual(['a']);
    await t.update((st) => void st.boards.push(board('c', 2))); // the journal was cut back: a new line starts clean
    await t.close();
    expect((await Store.open(torn)).state.boards.map((b) => b.id)).toEqual(['a', 'c']);
    // a snapshot written but the journal not yet emptied: the lines it holds are not applied twice
    await s.close();
    const folded = copy('folded', journal, readFileSync(path, 'utf8'));
    expect((await Store.open(folded)).state.boards.map((b) => b.id)).toEqual(['a', 'b']);
    // a line missing in the middle, or a line that is not JSON: refused, files untouched
    const gap = copy('gap', journal.split('\n')[1]! + '\n');
    await expect(Store.open(gap)).rejects.toThrow(/jumps from \d+ to \d+: lines are missing/);
    const garbage = copy('garbage', 'nope\n' + journal);
    await expect(Store.open(garbage)).rejects.toThrow(/line 1 is not valid JSON/);
    expect(readFileSync(`${garbage}.journal`, 'utf8')).toBe('nope\n' + journal);
    // a journal without its file: refused (the file was lost, not new)
    const orphan = join(mkdtempSync(join(work, 'orphan-')), 'state.json');
    writeFileSync(`${orphan}.journal`, journal);
    await expect(Store.open(orphan)).rejects.toThrow(/has lines but .* is missing/);
  });

  it('a journal append that fails (disk full) rejects its batch, leaves memory as on disk, and the store recovers', async () => {
    // A real full disk: a 1 MiB tmpfs of our own, filled by a file beside the state.
    const mnt = mkdtempSync(join(work, 'tmpfs-'));
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'dozen-journal-test', mnt]);
    try {
      const path = join(mnt, 'state.json');
      const s = await Store.open(path, { journalAboveBytes: 0, verify: true });
      await s.update((st) => void st.boards.push(board('a')));
      const fill = join(mnt, 'fill');
      try {
        execFileSync('dd', ['if=/dev/zero', `of=${fill}`, 'bs=4k', 'count=1024'], { stdio: 'ignore' });
      } catch { /* stops at ENOSPC, as meant */ }
      await expect(s.update((st) => void st.boards.push(...Array.from({ length: 60 }, (_, i) => board(`x${i}`, i))))).rejects.toThrow(/ENOSPC/);
      expect(s.state.boards.map((b) => b.id)).toEqual(['a']);
      rmSync(fill);
      await s.update((st) => void st.boards.push(board('c', 2)));
      expect(s.state.boards.map((b) => b.id)).toEqual(['a', 'c']);
      await s.close();
      const again = await Store.open(path);
      expect(again.state.boards.map((b) => b.id)).toEqual(['a', 'c']);
      await again.close();
    } finally {
      execFileSync('umount', ['-l', mnt]);
    }
  });
});

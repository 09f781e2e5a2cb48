import { appendFile, mkdir, open, readdir, readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';

/** One archived record: a released lease or a finished job, as it last was in the state. */
export interface HistoryRecord {
  kind: 'lease' | 'job';
  id: string;
  tenantId: string;
  /** When it was archived. */
  at: string;
  data: unknown;
}

const FILE = /^history-(\d{4}-\d{2}-\d{2})\.jsonl$/;

/**
 * What the state no longer needs to carry: finished jobs and long-released leases, appended to one
 * JSON-lines file per day under `dir` and deleted after `keepDays`. The state file stays the size of
 * what is live, so a write costs the same after a year of boots as on the first day. Reading an
 * archived record (GET /v1/jobs/:id of an old job) scans the files, newest first: rare, and bounded by
 * `keepDays`.
 */
export class HistoryLog {
  private tail: Promise<unknown> = Promise.resolve();

  constructor(
    readonly dir: string,
    private readonly keepDays: number,
  ) {}

  /** Appends and fsyncs; appends run one at a time, so lines never interleave. */
  append(records: HistoryRecord[], now = new Date()): Promise<void> {
    const run = this.tail.then(async () => {
      if (!records.length) return;
      await mkdir(this.dir, { recursive: true });
      const path = join(this.dir, `history-${now.toISOString().slice(0, 10)}.jsonl`);
      await appendFile(path, records.map((r) => JSON.stringify(r)).join('\n') + '\n', { mode: 0o600 });
      const fh = await open(path, 'r');
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
    });
    this.tail = run.catch(() => {});
    return run;
  }

  /** The newest archived record of that kind and id. */
  async find(kind: HistoryRecord['kind'], id: string): Promise<HistoryRecord | undefined> {
    for (const name of (await this.files()).reverse()) {
      const text = await readFile(join(this.dir, name), 'utf8').catch(() => '');
      const needle = `"id":${JSON.stringify(id)}`;
      let found: HistoryRecord | undefined;
      for (const line of text.split('\n')) {
        if (!line.includes(needle)) continue;
        try {
          const r = JSON.parse(line) as HistoryRecord;
          if (r.kind === kind && r.id === id) found = r;
        } catch {
          // a torn last line after a crash: skip it
        }
      }
      if (found) return found;
    }
    return undefined;
  }

  /** Deletes the files older than keepDays; returns how many. */
  async prune(now = Date.now()): Promise<number> {
    const cutoff = new Date(now - this.keepDays * 86_400_000).toISOString().slice(0, 10);
    let n = 0;
    for (const name of await this.files()) {
      if (FILE.exec(name)![1]! < cutoff) {
        await unlink(join(this.dir, name)).catch(() => {});
        n++;
      }
    }
    return n;
  }

  private async files(): Promise<string[]> {
    const names = await readdir(this.dir).catch(() => [] as string[]);
    return names.filter((n) => FILE.test(n)).sort();
  }
}

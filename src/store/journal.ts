/**
 * What one batch of store mutations changed, as a journal line, without diffing the whole state.
 *
 * A mutation gets `track(state).root`: the state's top-level collections (boards, leases, jobs, ...)
 * come back as proxies that record what happens to them. Elements themselves are handed out as the real
 * objects (no proxy reaches a caller, so structuredClone, spread and identity behave as always); an
 * element handed out may have been changed, so at the end of the batch each one is serialized and
 * compared with what the journal or snapshot last recorded for it (`Shadows`). The cost is the elements
 * a batch touched, not the size of the rack. Searches (find, some, filter, ...) hand out only what they
 * return; walks (for-of, map, forEach) hand out everything they pass, so a batch that walks a whole
 * collection pays for that collection.
 *
 * Structural changes are recorded in order (push, splice, index writes) and replayed in order, with the
 * items' values as they are at the end of the batch; anything else that reorders a collection (sort,
 * shift, a reassignment) records the whole collection.
 */

/** One recorded change. Values are the elements' JSON (already serialized when the line is built). */
export type Op =
  | { c: string; put: number; v: unknown }
  | { c: string; push: unknown[] }
  | { c: string; splice: [number, number]; items: unknown[] }
  | { c: string; all: unknown[] }
  | { root: string; v?: unknown };

/**
 * What the journal or the last snapshot holds for each element, as JSON text. An element without an
 * entry counts as changed once touched (after a snapshot the map starts empty: a first touch costs one
 * put, which is never wrong).
 */
export class Shadows {
  private map = new WeakMap<object, string>();
  get(o: object): string | undefined {
    return this.map.get(o);
  }
  set(o: object, text: string): void {
    this.map.set(o, text);
  }
  clear(): void {
    this.map = new WeakMap();
  }
}

type Step = { kind: 'put'; i: number; ref: unknown } | { kind: 'push'; items: unknown[] } | { kind: 'splice'; start: number; del: number; items: unknown[] };

interface CollectionLog {
  steps: Step[];
  whole: boolean;
  touched: Set<object>;
  all: boolean; // every element was handed out (a walk)
}

/** Methods that only read and hand out what they return (their callbacks get the real elements). */
const SEARCHES = new Set(['find', 'findLast', 'findIndex', 'findLastIndex', 'some', 'every', 'filter', 'indexOf', 'lastIndexOf', 'includes', 'at', 'slice', 'join', 'toString']);
/** Methods that reorder or shrink in ways not worth replaying step by step: the whole collection is recorded. */
const REORDERS = new Set(['pop', 'shift', 'unshift', 'sort', 'reverse', 'fill', 'copyWithin']);

function isIndex(p: string | symbol): boolean {
  return typeof p === 'string' && p !== '' && String(Number(p) >>> 0) === p;
}

export interface Tracker<S extends object> {
  /** The state as mutations must see it during the batch. */
  readonly root: S;
  /** The batch's changes as a JSON array of ops (null: nothing to record); records them in `shadows`. */
  encode(shadows: Shadows): string | null;
}

/** Starts recording one batch on `state` (an object whose array-valued keys are its collections). */
export function track<S extends object>(state: S): Tracker<S> {
  const logs = new Map<string, CollectionLog>();
  const roots = new Map<string, { v: unknown; deleted: boolean }>();
  const proxies = new Map<string, unknown>();
  const logOf = (c: string): CollectionLog => {
    let l = logs.get(c);
    if (!l) logs.set(c, (l = { steps: [], whole: false, touched: new Set(), all: false }));
    return l;
  };
  const handOut = (log: CollectionLog, v: unknown): void => {
    if (v !== null && typeof v === 'object') log.touched.add(v);
  };

  const collection = (c: string, arr: unknown[]): unknown[] => {
    const log = logOf(c);
    return new Proxy(arr, {
      get(t, p) {
        if (isIndex(p)) {
          const v = t[Number(p)];
          handOut(log, v);
          return v;
        }
        if (p === 'length') return t.length;
        if (p === 'push') {
          return (...items: unknown[]) => {
            if (!log.whole) log.steps.push({ kind: 'push', items });
            return t.push(...items);
          };
        }
        if (p === 'splice') {
          return (start?: number, del?: number, ...items: unknown[]) => {
            const len = t.length;
            const s = start === undefined ? len : Math.trunc(start) < 0 ? Math.max(len + Math.trunc(start), 0) : Math.min(Math.trunc(start), len);
            const d = del === undefined ? (start === undefined ? 0 : len - s) : Math.min(Math.max(Math.trunc(del), 0), len - s);
            if (!log.whole) log.steps.push({ kind: 'splice', start: s, del: d, items });
            return t.splice(s, d, ...items);
          };
        }
        if (typeof p === 'string' && REORDERS.has(p)) {
          return (...args: unknown[]) => {
            log.whole = true;
            return (t as any)[p](...args);
          };
        }
        if (typeof p === 'string' && SEARCHES.has(p)) {
          return (...args: unknown[]) => {
            const r = (t as any)[p](...args);
            if (Array.isArray(r)) r.forEach((v) => handOut(log, v));
            else handOut(log, r);
            return r;
          };
        }
        const v = Reflect.get(t, p);
        if (typeof v === 'function' && p !== 'constructor') {
          // map, forEach, reduce, entries, values, for-of (Symbol.iterator), ...: every element may come out.
          log.all = true;
          return v.bind(t);
        }
        return v;
      },
      set(t, p, v) {
        if (isIndex(p)) {
          if (!log.whole) log.steps.push({ kind: 'put', i: Number(p), ref: v });
          t[Number(p)] = v;
          return true;
        }
        log.whole = true;
        return Reflect.set(t, p, v);
      },
      deleteProperty(t, p) {
        log.whole = true;
        return Reflect.deleteProperty(t, p);
      },
      defineProperty(t, p, d) {
        log.whole = true;
        return Reflect.defineProperty(t, p, d);
      },
    });
  };

  const root = new Proxy(state, {
    get(t, p) {
      const v = Reflect.get(t, p);
      if (typeof p !== 'string' || !Array.isArray(v)) return v;
      let px = proxies.get(p);
      if (!px || proxyTargets.get(px as object) !== v) {
        px = collection(p, v);
        proxyTargets.set(px as object, v);
        proxies.set(p, px);
      }
      return px;
    },
    set(t, p, v) {
      if (typeof p !== 'string') return Reflect.set(t, p, v);
      const raw = Array.isArray(v) ? (proxyTargets.get(v) ?? v) : v;
      if (Array.isArray(raw)) logOf(p).whole = true;
      else roots.set(p, { v: raw, deleted: false });
      return Reflect.set(t, p, raw);
    },
    deleteProperty(t, p) {
      if (typeof p === 'string') {
        if (Array.isArray(Reflect.get(t, p))) logOf(p).whole = true;
        else roots.set(p, { v: undefined, deleted: true });
      }
      return Reflect.deleteProperty(t, p);
    },
  });

  return {
    root,
    encode(shadows) {
      const parts: string[] = [];
      for (const [k, r] of roots) {
        if (Array.isArray((state as any)[k])) continue; // became a collection: recorded as one below
        parts.push(r.deleted || r.v === undefined ? `{"root":${JSON.stringify(k)}}` : `{"root":${JSON.stringify(k)},"v":${JSON.stringify(r.v)}}`);
      }
      for (const [c, log] of logs) {
        const arr = (state as any)[c] as unknown[] | undefined;
        if (!Array.isArray(arr)) {
          parts.push(`{"root":${JSON.stringify(c)}${arr === undefined ? '' : `,"v":${JSON.stringify(arr)}`}}`);
          continue;
        }
        if (log.whole) {
          parts.push(`{"c":${JSON.stringify(c)},"all":[${arr.map((el) => remember(shadows, el)).join(',')}]}`);
          continue;
        }
        const recorded = new Set<unknown>();
        for (const s of log.steps) {
          if (s.kind === 'push') {
            parts.push(`{"c":${JSON.stringify(c)},"push":[${s.items.map((el) => remember(shadows, el, recorded)).join(',')}]}`);
          } else if (s.kind === 'splice') {
            parts.push(`{"c":${JSON.stringify(c)},"splice":[${s.start},${s.del}],"items":[${s.items.map((el) => remember(shadows, el, recorded)).join(',')}]}`);
          } else {
            parts.push(`{"c":${JSON.stringify(c)},"put":${s.i},"v":${remember(shadows, s.ref, recorded)}}`);
          }
        }
        // Elements handed out: the ones whose JSON is no longer what was last recorded, at their final place.
        const check = (el: unknown, i: number) => {
          if (el === null || typeof el !== 'object' || recorded.has(el)) return;
          const text = JSON.stringify(el);
          if (shadows.get(el) === text) return;
          shadows.set(el, text);
          parts.push(`{"c":${JSON.stringify(c)},"put":${i},"v":${text}}`);
        };
        if (log.all || log.touched.size > 16) arr.forEach((el, i) => (log.all || log.touched.has(el as object)) && check(el, i));
        else for (const el of log.touched) {
          const i = arr.indexOf(el);
          if (i >= 0) check(el, i);
        }
      }
      return parts.length ? `[${parts.join(',')}]` : null;
    },
  };
}

/** Proxy → the array it stands for (so `s.x = s.x` or a proxy assigned back stores the real array). */
const proxyTargets = new WeakMap<object, unknown[]>();

/** The element's JSON, remembered as what the journal now holds for it (once per batch). */
function remember(shadows: Shadows, el: unknown, recorded?: Set<unknown>): string {
  const text = JSON.stringify(el) ?? 'null';
  if (el !== null && typeof el === 'object') {
    shadows.set(el, text);
    recorded?.add(el);
  }
  return text;
}

/** Replays one journal line's changes on a plain (parsed) state. */
export function applyOps(state: Record<string, any>, ops: Op[]): void {
  for (const op of ops) {
    if ('root' in op) {
      if ('v' in op) state[op.root] = op.v;
      else delete state[op.root];
      continue;
    }
    if ('all' in op) {
      state[op.c] = op.all;
      continue;
    }
    const arr = state[op.c];
    if (!Array.isArray(arr)) throw new Error(`journal: ${op.c} is not a collection`);
    if ('push' in op) arr.push(...op.push);
    else if ('splice' in op) arr.splice(op.splice[0], op.splice[1], ...op.items);
    else {
      if (op.put > arr.length) throw new Error(`journal: ${op.c}[${op.put}] is past the end (${arr.length})`);
      arr[op.put] = op.v;
    }
  }
}

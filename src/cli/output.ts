/** Print a value: JSON with --json, otherwise a plain table or key/value lines. */
export function print(value: unknown, opts: { json?: boolean; columns?: string[] }): void {
  if (opts.json) {
    console.log(JSON.stringify(value, null, 2));
    return;
  }
  if (Array.isArray(value)) {
    const cols = opts.columns ?? Object.keys(value[0] ?? {});
    const rows = value.map((v) => cols.map((c) => cell((v as Record<string, unknown>)[c])));
    const widths = cols.map((c, i) => Math.max(c.length, ...rows.map((r) => r[i]!.length)));
    console.log(cols.map((c, i) => c.toUpperCase().padEnd(widths[i]!)).join('  ').trimEnd());
    for (const r of rows) console.log(r.map((x, i) => x.padEnd(widths[i]!)).join('  ').trimEnd());
    if (!value.length) console.log('(none)');
    return;
  }
  if (value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) console.log(`${k}: ${cell(v)}`);
    return;
  }
  console.log(String(value));
}

function cell(v: unknown): string {
  if (v === undefined || v === null) return '-';
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

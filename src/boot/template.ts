/**
 * A deliberately tiny template language for boot files in pxe/:
 *   {{name}}        the value (templates may only name keys of the typed struct they are rendered from)
 *   {{?name}} line  the rest of the line only when name is set (non-empty)
 *   {{!name}} line  the rest of the line only when name is not set
 *   # lines starting with '##' are template comments and dropped
 */
export type TemplateValues = Record<string, string | number | undefined>;

export function renderTemplate(template: string, values: TemplateValues): string {
  const out: string[] = [];
  for (const line of template.split('\n')) {
    if (line.startsWith('##')) continue;
    const cond = /^\{\{([?!])(\w+)\}\}(.*)$/.exec(line);
    let text = line;
    if (cond) {
      const set = isSet(values, cond[2]!);
      if ((cond[1] === '?') !== set) continue;
      text = cond[3]!;
    }
    out.push(
      text.replace(/\{\{(\w+)\}\}/g, (_, key: string) => {
        if (!(key in values)) throw new Error(`template names an unknown value: ${key}`);
        return String(values[key] ?? '');
      }),
    );
  }
  return out.join('\n');
}

function isSet(values: TemplateValues, key: string): boolean {
  if (!(key in values)) throw new Error(`template names an unknown value: ${key}`);
  const v = values[key];
  return v !== undefined && v !== '';
}

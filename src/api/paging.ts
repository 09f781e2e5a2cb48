import type { Request, Response } from 'express';
import { z } from 'zod';
import { BadRequestError } from '../util/errors.js';

/** The most items one list request returns: a request's cost is bounded whatever the size of the rack. */
export const MAX_PAGE = 500;

const pageQuery = z.object({
  limit: z.coerce.number().int().min(1).max(MAX_PAGE).default(MAX_PAGE),
  after: z.string().min(1).max(128).optional(),
});

/**
 * One page of a list, in its order, after the item whose id is `after` (`?limit=&after=`). The body stays
 * a plain array; when more follow, a `Link: <…?after=<last id>&limit=N>; rel="next"` header says where.
 * `position(id)` finds an item's place without a scan where the list has an index.
 */
export function page<T extends { id: string }>(req: Request, res: Response, items: readonly T[], position?: (id: string) => number): T[] {
  const q = pageQuery.safeParse(req.query);
  if (!q.success) throw new BadRequestError(`paging: ${q.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  const { limit, after } = q.data;
  let start = 0;
  if (after !== undefined) {
    const i = position ? position(after) : items.findIndex((x) => x.id === after);
    if (i < 0) throw new BadRequestError(`paging: after=${after} is not in this list (it may have been removed: start again without after)`);
    start = i + 1;
  }
  const out = items.slice(start, start + limit);
  if (start + limit < items.length) {
    const next = new URLSearchParams({ after: out[out.length - 1]!.id, limit: String(limit) });
    res.setHeader('Link', `<${req.baseUrl}${req.path}?${next}>; rel="next"`);
  }
  return out;
}

/** The next page's path (under /v1) from a Link header, if any. */
export function nextPage(link: string | null): string | undefined {
  const m = link && /<[^>]*?\/v1(\/[^>]*)>;\s*rel="next"/.exec(link);
  return m ? m[1] : undefined;
}

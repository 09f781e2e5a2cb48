import type { Request, Response } from 'express';
import type { z } from 'zod';
import type { Principal } from '../auth/tokens.js';

/**
 * One API route: the same record registers the express handler and writes the OpenAPI document, so
 * the schema that validates a request is the schema the document shows.
 */
export interface Route {
  method: 'get' | 'post' | 'patch' | 'delete';
  path: string;
  summary: string;
  /** public: no token; any: a tenant's or the admin's token; admin: the admin's. */
  access: 'public' | 'any' | 'admin';
  body?: z.ZodType;
  status?: number;
  /** Streams (SSE) and non-JSON answers write the response themselves and return undefined. */
  handler: (ctx: { req: Request; res: Response; p: Principal; body: any; params: Record<string, string> }) => unknown;
}

export const route = (r: Route): Route => r;

import { z } from 'zod';
import type { Route } from './route.js';

/** OpenAPI 3.1 document generated from the route table and its zod schemas. */
export function openapiDocument(routes: Route[], version: string): object {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of routes) {
    const path = '/v1' + r.path.replace(/:(\w+)/g, '{$1}');
    const params = [...r.path.matchAll(/:(\w+)/g)].map((m) => ({ name: m[1], in: 'path', required: true, schema: { type: 'string' } }));
    (paths[path] ??= {})[r.method] = {
      summary: r.summary,
      ...(params.length ? { parameters: params } : {}),
      ...(r.access === 'public' ? { security: [] } : {}),
      ...(r.access === 'admin' ? { 'x-dozen-access': 'admin' } : { 'x-dozen-access': r.access }),
      ...(r.body ? { requestBody: { required: true, content: { 'application/json': { schema: z.toJSONSchema(r.body, { io: 'input', unrepresentable: 'any' }) } } } } : {}),
      responses: {
        [String(r.status ?? 200)]: { description: 'success' },
        ...(r.body ? { 400: { description: 'invalid body: the error names each bad field' } } : {}),
        ...(r.access !== 'public' ? { 401: { description: 'missing, invalid, expired or revoked token' } } : {}),
        ...(r.access === 'admin' ? { 403: { description: 'admin only' } } : {}),
        ...(r.path.includes(':') ? { 404: { description: 'not found (or not yours)' } } : {}),
      },
    };
  }
  return {
    openapi: '3.1.0',
    info: { title: 'DozenCloud API', version },
    components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
    security: [{ bearer: [] }],
    paths,
  };
}

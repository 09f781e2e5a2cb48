import type { ImageCatalog } from '../../images/catalog.js';
import { NotFoundError } from '../../util/errors.js';
import { route, type Route } from '../route.js';

/** The image catalog, readable by every tenant (import and delete are added by src/images). */
export function imageRoutes(d: { images: ImageCatalog }): Route[] {
  return [
    route({ method: 'get', path: '/images', summary: 'List images', access: 'any', handler: async () => (await d.images.list()).map((i) => i.manifest) }),
    route({
      method: 'get',
      path: '/images/:name',
      summary: 'Show an image',
      access: 'any',
      handler: async ({ params }) => {
        const i = await d.images.get(params.name!);
        if (!i) throw new NotFoundError(`image ${params.name}`);
        return i.manifest;
      },
    }),
  ];
}

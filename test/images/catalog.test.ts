/**
 * The image catalog's cache: callers that arrive while a scan of the image folders runs share it (a DHCP
 * storm asks the catalog on every request; one scan each stalled the main thread), and invalidate() makes
 * the next caller see what changed even while an older scan is still in flight.
 */
import { cpSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ImageCatalog } from '../../src/images/catalog.js';
import { makeImageRoot } from '../helpers/fixtures.js';

const root = makeImageRoot('alpha');
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('ImageCatalog', () => {
  it('serves concurrent callers from one scan, and rescans only after the cache expires', async () => {
    const catalog = new ImageCatalog([{ dir: root, sub: 'build' }], 60_000);
    const got = await Promise.all(Array.from({ length: 50 }, () => catalog.get('alpha')));
    expect(got.every((i) => i?.name === 'alpha')).toBe(true);
    expect(catalog.stats.scans).toBe(1);
    await catalog.list();
    expect(catalog.stats.scans).toBe(1);
    const short = new ImageCatalog([{ dir: root, sub: 'build' }], 0);
    await short.get('alpha');
    await short.get('alpha');
    expect(short.stats.scans).toBe(2);
  });

  it('an expired cache answers a name it knows at once and rescans behind it; an unknown name waits for the rescan', async () => {
    const dir = makeImageRoot('gamma');
    try {
      const catalog = new ImageCatalog([{ dir, sub: 'build' }], 50);
      expect((await catalog.get('gamma'))?.manifest.name).toBe('gamma');
      await new Promise((r) => setTimeout(r, 150)); // expired (timers count from the loop's cached time: a margin)
      const m = join(dir, 'gamma', 'build', 'manifest.json');
      const text = readFileSync(m, 'utf8');
      rmSync(m); // gamma is gone from disk; only a rescan can know
      let settled = false;
      const stale = catalog.get('gamma').then((i) => ((settled = true), i));
      await Promise.resolve();
      await Promise.resolve();
      expect(settled, 'answered from the expired cache, without waiting on the folders').toBe(true);
      expect((await stale)?.name).toBe('gamma');
      expect(catalog.stats.scans, 'and one rescan started behind it').toBe(2);
      expect(await catalog.get('delta'), 'an unknown name waits for that rescan').toBeNull();
      expect(catalog.stats.scans).toBe(2);
      expect(await catalog.get('gamma'), 'the rescan saw gamma go').toBeNull();
      writeFileSync(m, text);
      catalog.invalidate();
      expect((await catalog.get('gamma'))?.name).toBe('gamma');
      // A scan long past its expiry does not answer: the caller waits for the rescan.
      const slow = new ImageCatalog([{ dir, sub: 'build' }], 50);
      await slow.get('gamma');
      const now = Date.now;
      Date.now = () => now() + 60_000;
      try {
        rmSync(m);
        expect(await slow.get('gamma'), 'an hour-old (here: a minute) scan is not trusted').toBeNull();
      } finally {
        Date.now = now;
        writeFileSync(m, text);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('after invalidate(), a caller never gets a scan that began before it', async () => {
    const catalog = new ImageCatalog([{ dir: root, sub: 'build' }], 60_000);
    const early = catalog.get('beta'); // a scan in flight, begun before beta existed
    cpSync(join(root, 'alpha'), join(root, 'beta'), { recursive: true });
    const m = join(root, 'beta', 'build', 'manifest.json');
    writeFileSync(m, readFileSync(m, 'utf8').replace('"alpha"', '"beta"'));
    catalog.invalidate();
    const late = await catalog.get('beta');
    expect(late?.name).toBe('beta');
    expect(catalog.stats.scans, 'the late caller waited on the scan begun before invalidate()').toBe(2);
    await early; // it may or may not have seen beta (its readdir raced the copy); either way:
    expect((await catalog.get('beta'))?.name).toBe('beta');
    expect(catalog.stats.scans).toBe(2);
  });
});

import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { log } from '../log.js';

/** The admin token: from config/env, else one made on first start and kept (0600) in the data dir. */
export async function adminToken(config: { adminToken?: string }, dataDir: string): Promise<string> {
  if (config.adminToken) return config.adminToken;
  const file = join(dataDir, 'admin-token');
  const existing = (await readFile(file, 'utf8').catch(() => '')).trim();
  if (existing) return existing;
  const token = randomBytes(24).toString('base64url');
  await writeFile(file, token + '\n', { mode: 0o600 });
  log.info({ file }, 'made a new admin token');
  return token;
}

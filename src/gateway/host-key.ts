import { constants } from 'node:fs';
import { mkdir, open, readFile, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import ssh2 from 'ssh2';

/**
 * The gateway's ed25519 host key: read from `path`, or made there (0600) the first time, so tenants'
 * known_hosts entries stay valid across restarts. Created with O_EXCL: two servers starting at once
 * cannot write two different keys. A file that does not hold a private key is an error, never replaced.
 */
export async function ensureHostKey(path: string): Promise<{ privateKey: string; created: boolean; publicKey: string }> {
  let created = false;
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new Error(`ssh gateway host key ${path}: ${(err as Error).message}`, { cause: err });
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    const pair = ssh2.utils.generateKeyPairSync('ed25519', { comment: 'dozencloud-ssh-gateway' });
    try {
      const fh = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
      try {
        await fh.writeFile(pair.private);
        await fh.sync();
      } finally {
        await fh.close();
      }
      created = true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw new Error(`ssh gateway host key ${path}: ${(e as Error).message}`, { cause: e });
    }
    text = await readFile(path, 'utf8');
  }
  const key = ssh2.utils.parseKey(text);
  if (key instanceof Error || Array.isArray(key) || !key.isPrivateKey()) {
    throw new Error(`ssh gateway host key ${path} is not an unencrypted private key`);
  }
  const mode = (await stat(path)).mode & 0o777;
  if (mode & 0o077) throw new Error(`ssh gateway host key ${path} is readable by others (mode ${mode.toString(8)}): chmod 600 it`);
  return { privateKey: text, created, publicKey: `${key.type} ${key.getPublicSSH().toString('base64')}` };
}

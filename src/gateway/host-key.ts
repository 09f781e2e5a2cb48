import { constants } from 'node:fs';
import { mkdir, open, readFile, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import ssh2 from 'ssh2';

/**
 * A new ed25519 host key in OpenSSH format. ssh2's generator drops a leading zero byte of the key
 * (about 1 key in 256 comes out with a 31-byte public key that its own parser, and OpenSSH, reject),
 * so a key is only taken once it parses back as a private key; the next draw is independent.
 */
export function generateHostKey(): { private: string } {
  for (let attempt = 0; attempt < 16; attempt++) {
    const pair = ssh2.utils.generateKeyPairSync('ed25519', { comment: 'dozencloud-ssh-gateway' });
    const key = ssh2.utils.parseKey(pair.private);
    if (!(key instanceof Error) && !Array.isArray(key) && key.isPrivateKey()) return pair;
  }
  throw new Error('ssh gateway: could not generate a valid ed25519 host key');
}

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
    const pair = generateHostKey();
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

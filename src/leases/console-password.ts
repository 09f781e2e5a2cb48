import { spawn } from 'node:child_process';

/** SHA-512 crypt ($6$): what Debian's chpasswd -e, usermod -p and shadow accept on every image we boot. */
const SHA512_CRYPT = /^\$6\$[./0-9A-Za-z]{1,16}\$[./0-9A-Za-z]{86}$/;

/**
 * A console password as its crypt(3) hash, made by `openssl passwd -6` (random salt). Only the hash is
 * kept; the password goes to openssl on stdin, never on a command line another process could read.
 */
export function hashConsolePassword(password: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn('openssl', ['passwd', '-6', '-stdin'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => (out += d));
    p.stderr.on('data', (d: Buffer) => (err += d));
    p.on('error', (e) => reject(new Error(`openssl passwd: ${e.message} (install: apt-get install openssl)`)));
    p.on('close', (code) => {
      const hash = out.trim();
      if (code === 0 && SHA512_CRYPT.test(hash)) resolve(hash);
      else reject(new Error(`openssl passwd -6 failed (exit ${code}): ${err.trim() || 'unexpected output'}`));
    });
    p.stdin.on('error', () => {}); // an openssl that exits early (or is missing) closes the pipe: its exit says why
    p.stdin.end(`${password}\n`);
  });
}

export const isCryptHash = (s: string): boolean => SHA512_CRYPT.test(s);

import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../../src/config.js';
import { prettyLine } from '../../src/log.js';

const at = new Date(2026, 0, 2, 3, 4, 5, 67).getTime(); // local time, as the pretty line shows it

describe('pretty log lines', () => {
  it('time, level, message, then the other fields as key=value', () => {
    const line = JSON.stringify({ level: 40, time: at, board: 'bpi-01', n: 3, why: 'no offer', d: { a: 1 }, msg: 'dhcp timed out' });
    expect(prettyLine(line, { colour: false })).toBe('03:04:05.067 WARN  dhcp timed out board=bpi-01 n=3 why="no offer" d={"a":1}\n');
    const err = JSON.stringify({ level: 50, time: at, err: { type: 'TypeError', message: 'x is undefined', stack: 'TypeError: …\n    at f' }, msg: 'failed' });
    expect(prettyLine(err, { colour: false })).toBe('03:04:05.067 ERROR failed err="TypeError: x is undefined"\n');
  });

  it('a field a client chose cannot reach the terminal as escape sequences', () => {
    const line = JSON.stringify({ level: 30, time: at, user: '\x1b]52;c;ZXZpbA==\x07lease', msg: 'ssh gateway: login refused' });
    expect(prettyLine(line, { colour: false })).toBe('03:04:05.067 INFO  ssh gateway: login refused user="\\u001b]52;c;ZXZpbA==\\u0007lease"\n');
  });

  it('colours the level and dims the rest on a terminal; passes through what is not JSON', () => {
    expect(prettyLine(JSON.stringify({ level: 30, time: at, msg: 'up', port: 8080 }), { colour: true })).toBe('\x1b[2m03:04:05.067\x1b[0m \x1b[32mINFO \x1b[0m up \x1b[2mport=8080\x1b[0m\n');
    expect(prettyLine('not json', { colour: true })).toBe('not json\n');
  });
});

describe('the process logger', () => {
  const dir = mkdtempSync(join(tmpdir(), 'log-'));
  const script = join(dir, 'logs.ts');
  writeFileSync(script, `import { log } from ${JSON.stringify(join(REPO_ROOT, 'src/log.ts'))};\nlog.info({ board: 'bpi-01' }, 'hello');\n`);
  const node = [process.execPath, '--import', `file://${join(REPO_ROOT, 'node_modules/tsx/dist/loader.mjs')}`, script];
  const env = (extra: Record<string, string>) => {
    const e: Record<string, string | undefined> = { ...process.env, LOG_LEVEL: 'info', ...extra };
    for (const k of ['LOG_FORMAT', 'NO_COLOR']) if (!(k in extra)) delete e[k];
    return e;
  };
  /** Run under a pseudo-terminal (util-linux `script`), so stdout is a TTY. */
  const onTty = (extra: Record<string, string>) =>
    execFileSync('script', ['-qec', node.map((a) => `'${a}'`).join(' '), '/dev/null'], { env: env(extra), encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

  it('writes JSON lines when stdout is not a terminal (as before), pretty ones with LOG_FORMAT=pretty', () => {
    const json = execFileSync(node[0]!, node.slice(1), { env: env({}), encoding: 'utf8' });
    expect(JSON.parse(json)).toMatchObject({ level: 30, board: 'bpi-01', msg: 'hello' });
    const pretty = execFileSync(node[0]!, node.slice(1), { env: env({ LOG_FORMAT: 'pretty' }), encoding: 'utf8' });
    expect(pretty).toMatch(/^\d\d:\d\d:\d\d\.\d{3} INFO  hello board=bpi-01\n$/);
  });

  // util-linux `script` (Debian's bsdutils, an essential package) gives the logger a real terminal.
  it('writes coloured one-line logs on a terminal; NO_COLOR and LOG_FORMAT=json are heeded', () => {
    expect(onTty({})).toMatch(/^\x1b\[2m\d\d:\d\d:\d\d\.\d{3}\x1b\[0m \x1b\[32mINFO \x1b\[0m hello \x1b\[2mboard=bpi-01\x1b\[0m\r?\n/);
    expect(onTty({ NO_COLOR: '1' })).toMatch(/^\d\d:\d\d:\d\d\.\d{3} INFO  hello board=bpi-01\r?\n/);
    expect(JSON.parse(onTty({ LOG_FORMAT: 'json' }).trim())).toMatchObject({ msg: 'hello' });
  });
});

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Browser, type Page } from 'playwright-core';
import { launchChromium } from '../helpers/browser.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../../src/api/app.js';
import { REPO_ROOT } from '../../src/config.js';
import { ImageImporter } from '../../src/images/import.js';
import { log } from '../../src/log.js';
import { consoleWebRouter } from '../../src/web/router.js';
import { ADMIN, apiHarness } from '../helpers/api-harness.js';
import { requireTools } from '../helpers/tools.js';
import { until } from '../helpers/until.js';
import { startConsoleServer } from './harness.js';

// Headless Chromium opens the lease page served by our router; the console behind it is the real one: a
// session on a pty whose other end is a real bash (socat exec:…,pty), reached over the console WebSocket.
// The lease the page shows comes from the real API (GET /v1/leases/:id over a real store and lease service); only
// the console's authorize() is the test's table, granting the tenant's real token that lease's console.
let TOKEN: string;
let LEASE: string;
let api: Awaited<ReturnType<typeof apiHarness>>;
let srv: Awaited<ReturnType<typeof startConsoleServer>>;
let shell: ChildProcess;
let browser: Browser;

beforeAll(async () => {
  requireTools('socat', 'bash');
  if (!existsSync('/usr/bin/chromium')) throw new Error('missing /usr/bin/chromium — run: sudo bash scripts/setup-host.sh');
  const dir = mkdtempSync(join(tmpdir(), 'console-web-'));
  const line = join(dir, 'shell-1.tty');
  shell = spawn('socat', [`pty,raw,echo=0,link=${line}`, 'exec:bash --norc --noprofile -i,pty,stderr,setsid,sigint,sane'], {
    stdio: 'ignore',
    env: { PATH: process.env.PATH, PS1: 'board$ ', TERM: 'xterm-256color', HOME: dir, HISTFILE: '/dev/null' },
  });
  await until('the shell pty', () => existsSync(line), { timeoutMs: 5000 });
  // A tenant leases board shell-1 through the API (its `command` power driver is `true`: the job runs, the board
  // never network-boots, so the lease ends in `error` — whatever its state, the page must show the API's).
  srv = await startConsoleServer({
    dataDir: dir,
    // The API with the web pages, as the server mounts them.
    app: (a) => createApp({ adminToken: ADMIN, store: a.store, inventory: a.inventory, events: a.events, images: a.images, leases: a.leases, bus: a.bus, log, consoles: a.consoles, importer: new ImageImporter({ catalog: a.images, dir: mkdtempSync(join(tmpdir(), 'imported-')), log, inUse: () => null }), routers: [consoleWebRouter()] }),
  });
  api = srv.api;
  TOKEN = await srv.tenant('web');
  LEASE = await srv.boardLease('shell-1', TOKEN);
  await srv.sessions.ensure({ id: 'shell-1', serial: line });
  browser = await launchChromium();
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await srv?.stop();
  shell?.kill('SIGKILL');
});

const screen = (page: Page) =>
  page.evaluate(() => {
    const b = (window as unknown as { dozenTerm: { buffer: { active: { length: number; getLine(i: number): { translateToString(trim: boolean): string } | undefined } } } }).dozenTerm.buffer.active;
    const lines: string[] = [];
    for (let i = 0; i < b.length; i++) lines.push(b.getLine(i)?.translateToString(true) ?? '');
    return lines.join('\n');
  });

async function waitScreen(page: Page, re: RegExp, what: string, timeoutMs = 10_000): Promise<void> {
  let text = '';
  await until(`${re} on the page’s terminal (${what})`, async () => re.test((text = await screen(page))), { timeoutMs, intervalMs: 100, detail: () => `screen:\n${text.trim().slice(-800)}` });
}

describe('lease page in a browser', () => {
  it('asks for the token once, shows the lease and the live console; a typed command runs and its output shows', async () => {
    const page = await browser.newPage({ viewport: { width: 1100, height: 640 } });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${srv.url}/leases/${LEASE}`);
    await page.fill('#token-input', TOKEN);
    await page.click('#token-form button[type=submit]');
    await page.waitForFunction(() => document.getElementById('status')?.textContent?.startsWith('console connected'), null, { timeout: 10_000 });
    const lease = (await api.api('GET', `/leases/${LEASE}`, undefined, TOKEN)).body;
    expect(lease).toMatchObject({ id: LEASE, boardId: 'shell-1' });
    expect(await page.textContent('#lease-state')).toBe(`state: ${lease.state} · board: shell-1 · image: test`);
    expect(await page.evaluate(() => sessionStorage.getItem('dozen.token'))).toBe(TOKEN);

    await page.click('#terminal');
    await page.keyboard.type('echo WEB-$((6*7)) from $(uname -s)\n');
    await waitScreen(page, /WEB-42 from Linux/, 'command output');
    mkdirSync(join(REPO_ROOT, 'test-artifacts'), { recursive: true });
    await page.screenshot({ path: join(REPO_ROOT, 'test-artifacts/console.png') });

    // A reload keeps the token (sessionStorage) and replays the scrollback.
    await page.reload();
    await waitScreen(page, /WEB-42 from Linux/, 'scrollback after reload');
    expect(await page.isHidden('#token-form')).toBe(true);
    expect(errors).toEqual([]);
    await page.close();
  });

  it('a lease the API does not know is reported, not a broken page', async () => {
    const page = await browser.newPage();
    await page.goto(`${srv.url}/leases/L-gone`);
    await page.evaluate((t) => sessionStorage.setItem('dozen.token', t), TOKEN);
    await page.reload();
    await page.waitForFunction(() => /404/.test(document.getElementById('lease-state')?.textContent ?? ''), null, { timeout: 10_000 });
    expect(await page.isDisabled('#btn-cycle')).toBe(true);
    await page.close();
  });

  it('serves xterm.js, its CSS and the fit addon from node_modules', async () => {
    for (const [path, type] of [
      ['/assets/xterm.js', 'javascript'],
      ['/assets/xterm.css', 'css'],
      ['/assets/addon-fit.js', 'javascript'],
    ]) {
      const res = await fetch(srv.url + path!);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toContain(type);
    }
  });
});

import { execFile, execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Browser, type BrowserContext, type Page } from 'playwright-core';
import { launchChromium, terminalText } from '../helpers/browser.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../../src/config.js';
import { type RunningServer } from '../../src/server.js';
import { startLabServer } from '../helpers/lab-server.js';
import { requireRoot, requireTools } from '../helpers/tools.js';
import { until } from '../helpers/until.js';
import { makeLoopFs, type LoopFs } from '../storage/loop-fs.js';
import { freeControlPort } from '../storage/tgt-fixture.js';

// Issue #14's "done means", as a new user lives it: the server starts; in a browser the operator signs in
// with the admin token, makes tenant `journey` and reads its token off the page (shown once); in another
// browser (a different user) the tenant signs in with it, leases a board with debian-12 and its SSH key from
// the form, watches the job's steps and the board's boot on the embedded console live, presses Enter on the
// console and gets a new `login:` prompt; then, from the host's shell, runs the SSH command the lease page
// shows (through the controller's SSH gateway) and lands on the board. Headless Chromium + OpenSSH; any page
// error, console error, failed request or error status from our origin fails the test.
const BOOT_MS = 600_000; // lease request → phone-home (debian-12 over iSCSI under QEMU TCG: 2–4 min here)
const ART = join(REPO_ROOT, 'test-artifacts/web');
const BOARD = 'lab-1';
const HOSTNAME = 'journey-bpi';
let server: RunningServer;
let fs: LoopFs | undefined;
let browser: Browser | undefined;
let leaseId: string | undefined;
let consoleText = '';
const work = mkdtempSync(join(tmpdir(), 'web-journey-'));
const key = join(work, 'id_ed25519');

beforeAll(async () => {
  requireRoot();
  requireTools('qemu-system-arm', 'tgtd', 'tgtadm', 'ssh', 'ssh-keygen', 'mkfs.btrfs', 'debootstrap');
  execFileSync('bash', [join(REPO_ROOT, 'images/debian-12/build.sh')], { stdio: 'ignore', timeout: 1_500_000 });
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'journey@host', '-f', key]);
  mkdirSync(ART, { recursive: true });
  fs = makeLoopFs('btrfs', 4096);
  server = await startLabServer({
    net: 178,
    prefix: 'dzj',
    extra: {
      dataDir: join(work, 'data'),
      storage: { enabled: true, dir: fs.dir, tgt: { controlPort: freeControlPort() } },
      leases: { osTimeoutMs: BOOT_MS },
    },
  });
  server.consoles.get(BOARD)!.on('data', (d: Buffer) => (consoleText = (consoleText + d.toString()).slice(-400_000)));
  browser = await launchChromium();
}, 1_800_000);

afterAll(async () => {
  try {
    if (server && leaseId) {
      const l = (await api('GET', `/leases/${leaseId}`)).body;
      if (l && l.state !== 'released' && l.state !== 'releasing') {
        const rel = await api('DELETE', `/leases/${leaseId}`);
        if (rel.body?.job?.id) await Promise.race([server.leases.settle(rel.body.job.id), new Promise((r) => setTimeout(r, 300_000))]);
      }
    }
  } finally {
    if (consoleText) writeFileSync(join(ART, 'journey-console.log'), consoleText);
    await browser?.close();
    await server?.stop({ labDown: true });
    fs?.cleanup();
    rmSync(work, { recursive: true, force: true });
  }
}, 600_000);

async function api(method: string, path: string, body?: unknown, token = server.adminToken) {
  const r = await fetch(`${server.apiUrl}/v1${path}`, { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: r.status, body: (await r.json().catch(() => undefined)) as any };
}

interface Watched {
  page: Page;
  problems: string[];
}

/** A page whose page errors, console errors, failed requests to our origin and error statuses from it are collected. */
async function watchedPage(ctx: BrowserContext, who: string): Promise<Watched> {
  const page = await ctx.newPage();
  await page.setViewportSize({ width: 1200, height: 900 });
  const w: Watched = { page, problems: [] };
  const ours = (url: string) => url.startsWith(server.apiUrl);
  page.on('pageerror', (e) => w.problems.push(`${who}: pageerror: ${e.message}`));
  page.on('console', (m) => m.type() === 'error' && w.problems.push(`${who}: console.error: ${m.text()}`));
  page.on('requestfailed', (r) => {
    // The event stream is closed on purpose when a page goes away.
    if (ours(r.url()) && !(r.url().endsWith('/v1/events') && r.failure()?.errorText === 'net::ERR_ABORTED')) w.problems.push(`${who}: request failed: ${r.method()} ${r.url()} ${r.failure()?.errorText}`);
  });
  page.on('response', (r) => ours(r.url()) && r.status() >= 400 && w.problems.push(`${who}: HTTP ${r.status()}: ${r.request().method()} ${r.url()}`));
  return w;
}

async function signIn(w: Watched, token: string): Promise<void> {
  await w.page.goto(server.apiUrl + '/');
  await w.page.waitForSelector('#signin-form', { state: 'visible', timeout: 15_000 });
  await w.page.fill('#token', token);
  await w.page.click('#signin-form button[type=submit]');
  await w.page.waitForSelector('#sign-out', { state: 'visible', timeout: 15_000 });
}

const shot = (page: Page, name: string) => page.screenshot({ path: join(ART, `journey-${name}.png`), fullPage: true });

/** What the lease page shows: the lease's state badge, the job's head and each step's state. */
const pageProgress = (page: Page) =>
  page.evaluate(() => ({
    lease: document.getElementById('lease-state')?.textContent ?? '',
    job: document.getElementById('job-head')?.textContent ?? '',
    steps: Object.fromEntries([...document.querySelectorAll<HTMLElement>('#job-steps li')].map((li) => [li.dataset.step ?? '?', li.dataset.state ?? '?'])),
    console: document.getElementById('console-status')?.textContent ?? '',
  }));

const promptCount = (text: string) => text.split('\n').filter((l) => /login:\s*$/.test(l)).length;

/** Runs a command on the host; resolves with its exit code and output (async: the gateway runs in this process). */
function run(cmd: string, args: string[], timeoutMs = 90_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs, encoding: 'utf8' }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : -1) : 0, stdout, stderr });
    });
  });
}

describe('a new user’s journey through the web UI', () => {
  it(
    'admin signs in → tenant and token → tenant signs in → leases debian-12 → boot live on the console → types → ssh through the gateway',
    async () => {
      const t0 = Date.now();
      const marks: string[] = [];
      const mark = (what: string) => marks.push(`${((Date.now() - t0) / 1000).toFixed(1)} s ${what}`);
      const pub = readFileSync(`${key}.pub`, 'utf8').trim();

      // 1. The operator: signs in with the admin token, makes tenant `journey`, reads its token once.
      const adminCtx = await browser!.newContext();
      const admin = await watchedPage(adminCtx, 'admin');
      await admin.page.goto(server.apiUrl + '/');
      await admin.page.waitForSelector('#signin-form', { state: 'visible', timeout: 15_000 });
      await shot(admin.page, 'signin');
      await signIn(admin, server.adminToken);
      expect(await admin.page.textContent('#who')).toBe('admin');
      await admin.page.click('nav a[href="#/tenants"]');
      await admin.page.waitForSelector('#tenant-table', { timeout: 15_000 });
      await admin.page.fill('#tenant-form input[name=id]', 'journey');
      await admin.page.fill('#tenant-form input[name=name]', 'Journey Tester');
      await admin.page.click('#tenant-form button[type=submit]');
      await admin.page.waitForSelector('#token-value', { timeout: 15_000 });
      const token = (await admin.page.textContent('#token-value'))!.trim();
      const tokenId = (await admin.page.textContent('#token-id'))!.trim();
      expect(token).toMatch(new RegExp(`^dz_${tokenId}_`));
      await admin.page.waitForSelector('#tenant-table tr[data-tenant="journey"]', { timeout: 15_000 });
      await shot(admin.page, 'admin-token');
      expect(admin.problems).toEqual([]);
      mark('tenant and token made in the admin UI');

      // 2. The tenant, in a browser of its own: signs in with that token, leases a board from the form.
      const tenantCtx = await browser!.newContext();
      const tenant = await watchedPage(tenantCtx, 'tenant');
      const { page } = tenant;
      await signIn(tenant, token);
      expect(await page.textContent('#who')).toBe('tenant journey');
      await page.waitForSelector('#lease-table', { timeout: 15_000 });
      await page.click('#new-lease');
      await page.waitForSelector('#lease-form #lease-image option[value="debian-12"]', { state: 'attached', timeout: 15_000 });
      await page.selectOption('#lease-kind', 'board');
      await page.selectOption('#lease-image', 'debian-12');
      await page.fill('#lease-keys', pub);
      await page.fill('#lease-hostname', HOSTNAME);
      await shot(page, 'new-lease');
      await page.click('#lease-form button[type=submit]');
      await page.waitForURL(/#\/leases\/[^/]+$/, { timeout: 15_000 }).catch(async (err) => {
        throw new Error(`the lease page after "Create lease": ${err.message}; form error: ${await page.textContent('#lease-error').catch(() => '')}`);
      });
      leaseId = decodeURIComponent(/#\/leases\/([^/]+)$/.exec(page.url())![1]!);
      const bootDeadline = Date.now() + BOOT_MS; // the kernel and the phone-home, both within BOOT_MS of the request
      const leftMs = () => Math.max(1000, bootDeadline - Date.now());
      mark(`lease ${leaseId} requested from the form`);
      const lease = server.store.state.leases.find((l) => l.id === leaseId)!;
      expect(lease, 'the lease the page went to').toBeDefined();
      expect([lease.tenantId, lease.kind, lease.image, lease.hostname, lease.boardId]).toEqual(['journey', 'board', 'debian-12', HOSTNAME, BOARD]);
      expect(lease.sshKeys).toEqual([pub]);

      // 3. Live progress: the job's steps move on the page, and the boot shows on the embedded console.
      let last = await pageProgress(page);
      const detail = async () => `page: ${JSON.stringify((last = await pageProgress(page).catch(() => last)))}\nterminal tail:\n${(await terminalText(page).catch(() => '')).slice(-1500)}\nserver-side console tail:\n${consoleText.slice(-1500)}`;
      await until('the "power" step shown done on the page', async () => (last = await pageProgress(page)).steps.power === 'done', { timeoutMs: 120_000, intervalMs: 250, detail });
      expect(last.steps['phone-home'], 'phone-home still to come when power is done (the page shows progress live)').not.toBe('done');
      expect(last.job).toMatch(/^provision job .*running/);
      mark('power step done on the page');
      // The board's serial line is up once QEMU runs (the lab's boards start powered off).
      await until('the page’s console connected to the board', async () => /^console connected/.test((await pageProgress(page)).console), { timeoutMs: 120_000, intervalMs: 250, detail });
      await shot(page, 'lease-power-on');
      let atKernel = last;
      await until('"Linux version" (the kernel booting) in the page’s terminal', async () => {
        const seen = /Linux version/.test(await terminalText(page));
        if (seen) atKernel = await pageProgress(page);
        return seen;
      }, { timeoutMs: leftMs(), intervalMs: 500, detail });
      mark(`kernel banner on the page’s console (lease ${atKernel.lease}, steps ${JSON.stringify(atKernel.steps)})`);
      expect(atKernel.steps['phone-home'], 'the kernel shows on the console before the lease is up (live, not replayed)').not.toBe('done');
      await shot(page, 'lease-booting');
      await until('the "phone-home" step done and the lease active on the page', async () => {
        last = await pageProgress(page);
        if (/ (failed|cancelled)\b/.test(last.job) || last.lease === 'error') throw new Error(`the provision job failed: ${JSON.stringify(last)}\nserver-side console tail:\n${consoleText.slice(-3000)}`);
        return last.steps['phone-home'] === 'done' && last.lease === 'active';
      }, { timeoutMs: leftMs(), intervalMs: 500, detail });
      expect(last.job).toMatch(/^provision job .*succeeded/);
      expect(Object.values(last.steps).every((s) => s === 'done'), JSON.stringify(last.steps)).toBe(true);
      mark('phone-home done, lease active on the page');
      await until('a "login:" prompt in the page’s terminal', async () => promptCount(await terminalText(page)) > 0, { timeoutMs: 180_000, intervalMs: 500, detail });
      mark('login: prompt on the page’s console');
      await shot(page, 'lease-active');

      // 4. Typing on the embedded console: Enter at the login prompt brings a new prompt.
      expect(await page.evaluate(() => (window as unknown as { dozenTerm: { options: { disableStdin?: boolean } } }).dozenTerm.options.disableStdin), 'the tenant may type on its console').toBeFalsy();
      const before = promptCount(await terminalText(page));
      await page.click('#console .xterm-screen');
      expect(await page.evaluate(() => document.activeElement?.classList.contains('xterm-helper-textarea')), 'a click on the console focuses the terminal').toBe(true);
      await page.keyboard.type('\n');
      await until('a new "login:" prompt after pressing Enter in the page’s terminal', async () => promptCount(await terminalText(page)) > before, { timeoutMs: 60_000, intervalMs: 250, detail: async () => `prompts before: ${before}; ${await detail()}` });
      mark('Enter typed on the page’s console, a new login: prompt came back');
      await shot(page, 'console-typed');

      // 5. From the host's shell: the SSH command the page shows, through the SSH gateway (its real port).
      const shown = (await page.textContent('#ssh-command'))!.trim();
      const m = /^ssh -J (\S+)@([^@\s:]+):(\d+) root@(\S+)$/.exec(shown);
      expect(m, `the page's SSH command: ${shown}`).not.toBeNull();
      const [, jumpUser, jumpHost, jumpPort, boardIp] = m!;
      // The gateway's real port (GET /v1/ssh-gateway): the command works as shown.
      expect([jumpUser, jumpHost, Number(jumpPort), boardIp]).toEqual([leaseId, new URL(server.apiUrl).hostname, server.gateway!.port, server.inventory.get(BOARD).ip]);
      expect(await page.textContent('#lease-dl')).toContain(HOSTNAME);
      // The gateway's host key, to check on first use: the key the gateway really serves.
      expect((await page.textContent('#ssh-host-key'))!.trim()).toBe(`[${jumpHost}]:${jumpPort} ${server.gateway!.hostPublicKey}`);
      // The jump ssh gets its options from -F (OpenSSH passes -F on to the ProxyJump hop, not -o).
      const cfg = join(work, 'ssh_config');
      writeFileSync(cfg, `Host *\n  IdentityFile ${key}\n  IdentitiesOnly yes\n  BatchMode yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  ConnectTimeout 10\n  LogLevel ERROR\n`);
      const argv = shown.split(/\s+/).slice(1);
      const sshArgs = ['-F', cfg, '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', ...argv, 'hostname'];
      let tried = { code: -1, stdout: '', stderr: '' };
      await until(`ssh ${sshArgs.join(' ')} printing the lease's hostname`, async () => (tried = await run('ssh', sshArgs)).code === 0, {
        timeoutMs: 180_000,
        intervalMs: 1000,
        detail: () => `last try: exit ${tried.code}, stdout ${JSON.stringify(tried.stdout)}, stderr ${JSON.stringify(tried.stderr.trim())}\nserver-side console tail:\n${consoleText.slice(-1500)}`,
      });
      expect(tried.stdout.trim()).toBe(HOSTNAME);
      mark('ssh through the gateway: hostname answered');

      // The operator's board list shows the board leased to the tenant, live.
      await admin.page.click('nav a[href="#/boards"]');
      await admin.page.waitForSelector(`#board-table tr[data-board="${BOARD}"]`, { timeout: 15_000 });
      await until('the admin board list showing the lease and tenant', async () => {
        const row = (await admin.page.textContent(`#board-table tr[data-board="${BOARD}"]`)) ?? '';
        return row.includes(leaseId!) && row.includes('journey');
      }, { timeoutMs: 15_000, intervalMs: 250 });
      await shot(admin.page, 'admin-boards');

      console.log(`web journey (lease ${leaseId}):\n  ${marks.join('\n  ')}`);
      // Checked last, so that one run shows the whole journey and every problem at once.
      expect(admin.problems, 'the operator’s page: page errors, console errors, failed requests, error statuses').toEqual([]);
      expect(tenant.problems, 'the tenant’s page: page errors, console errors, failed requests, error statuses').toEqual([]);
      await adminCtx.close();
      await tenantCtx.close();
    },
    BOOT_MS + 600_000,
  );
});

// The web UI's shell: sign-in, navigation (hash routes), the shared event stream, and the views of
// tenant.js (leases) and admin.js (boards, discovered MACs, images, tenants, health).
import { api, eventStream, on401 } from './api.js';
import { fill, flash, h } from './dom.js';
import * as tenant from './tenant.js';
import * as admin from './admin.js';

const $ = (id) => document.getElementById(id);
let me = null; // { role, tenant, token }
let events = null;
let cleanup = null;

const TENANT_NAV = [['#/leases', 'Leases']];
const ADMIN_NAV = [['#/boards', 'Boards'], ['#/discovered', 'Discovered'], ['#/leases', 'Leases'], ['#/images', 'Images'], ['#/tenants', 'Tenants'], ['#/health', 'Health']];

/** Route table: pattern → view(ctx, ...captures). Admin-only views are admin.js's. */
const ROUTES = [
  [/^#\/leases\/([^/]+)$/, tenant.leaseView],
  [/^#\/leases$/, tenant.leasesView],
  [/^#\/boards\/([^/]+)$/, admin.boardView, true],
  [/^#\/boards$/, admin.boardsView, true],
  [/^#\/discovered$/, admin.discoveredView, true],
  [/^#\/images$/, admin.imagesView, true],
  [/^#\/tenants$/, admin.tenantsView, true],
  [/^#\/health$/, admin.healthView, true],
];

function showSignIn(message) {
  me = null;
  events?.close();
  events = null;
  cleanup?.();
  cleanup = null;
  fill($('view'));
  $('nav').hidden = true;
  $('sign-out').hidden = true;
  $('who').textContent = '';
  $('signin').hidden = false;
  const err = $('signin-error');
  err.hidden = !message;
  err.textContent = message || '';
  $('token').focus();
}

async function signedIn(who) {
  me = who;
  $('signin').hidden = true;
  $('sign-out').hidden = false;
  $('who').textContent = who.role === 'admin' ? 'admin' : 'tenant ' + who.tenant;
  $('who').id = 'who';
  const nav = who.role === 'admin' ? ADMIN_NAV : TENANT_NAV;
  fill($('nav'), nav.map(([href, label]) => h('a', { href }, label)));
  $('nav').hidden = false;
  events = eventStream();
  events.subscribe('end', (e) => showSignIn('Signed out: ' + (e.reason || 'the session ended')));
  route();
}

function route() {
  if (!me) return;
  const hash = location.hash || '';
  let match = null;
  for (const [re, view, adminOnly] of ROUTES) {
    const m = re.exec(hash);
    if (m && (!adminOnly || me.role === 'admin')) {
      match = [view, m.slice(1).map(decodeURIComponent)];
      break;
    }
  }
  if (!match) {
    location.replace(me.role === 'admin' ? '#/boards' : '#/leases');
    return;
  }
  for (const a of $('nav').querySelectorAll('a')) a.classList.toggle('active', hash.startsWith(a.getAttribute('href')));
  cleanup?.();
  flash('');
  const main = fill($('view'));
  const ctx = { main, me, events, go: (to) => (location.hash = to) };
  try {
    cleanup = match[0](ctx, ...match[1]) || null;
  } catch (err) {
    flash(String(err.message || err), 'error');
  }
}

$('signin-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const input = $('token');
  const token = input.value.trim();
  input.value = ''; // the token leaves the page's DOM at once: only the HttpOnly cookie keeps it
  try {
    const who = await api('POST', '/session', { token });
    await signedIn(who);
  } catch (err) {
    showSignIn(err.status === 401 ? 'Token refused: ' + err.message : 'Sign-in failed: ' + err.message);
  }
});

$('sign-out').addEventListener('click', async () => {
  try {
    await api('DELETE', '/session');
  } finally {
    history.replaceState(null, '', location.pathname);
    showSignIn('Signed out.');
  }
});

on401((err) => showSignIn('Your session ended: ' + err.message));
window.addEventListener('hashchange', route);
// A view's unexpected failure shows as a message rather than a silent stop.
window.addEventListener('unhandledrejection', (e) => {
  flash(String((e.reason && e.reason.message) || e.reason), 'error');
});

(async () => {
  const s = await api('GET', '/session');
  if (s.signedIn) await signedIn(s);
  else showSignIn(s.reason ? 'Your session ended: ' + s.reason : '');
})();

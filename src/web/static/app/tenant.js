// Tenant views (admins see every tenant's): the leases list with the new-lease form, and one lease — its
// metadata, SSH command, live job progress, embedded console and actions. Only what the API gives a
// tenant is shown, and of that only the lease's own fields: no disk paths, no hosts, no iSCSI details.
import { api } from './api.js';
import { badge, confirmDialog, dl, fill, flash, h, table, when } from './dom.js';
import { openConsole } from './console.js';

const enc = encodeURIComponent;
const GONE = new Set(['released', 'releasing']);

/** Calls fn at most once per `ms`, trailing (bursts of events → one reload). */
function debounce(fn, ms = 150) {
  let t;
  return () => {
    clearTimeout(t);
    t = setTimeout(fn, ms);
  };
}

const report = (err) => flash(err.message || String(err), 'error');

export function leasesView(ctx) {
  const { main, me, events } = ctx;
  const admin = me.role === 'admin';
  const list = h('div', { id: 'leases' }, h('p', { className: 'muted' }, 'loading…'));
  const formBox = h('div', { className: 'card', hidden: true });
  main.append(
    h('div', { className: 'row' }, h('h1', {}, admin ? 'All leases' : 'Your leases'), h('button', { id: 'new-lease', className: 'primary', type: 'button', onclick: () => (formBox.hidden = !formBox.hidden) }, 'New lease')),
    formBox,
    list,
  );
  let alive = true;

  async function load() {
    try {
      const leases = await api('GET', '/leases');
      if (!alive) return;
      leases.sort((a, b) => (b.createdAt || '').localeCompare(a.createdAt || ''));
      const headers = ['Lease', 'Kind', 'State', 'Board', 'Image', 'Created'].concat(admin ? ['Tenant'] : []);
      fill(list, table(headers, leases.map((l) => ({
        dataset: { lease: l.id, state: l.state },
        cells: [h('a', { href: '#/leases/' + enc(l.id) }, l.id), l.kind, badge(l.state), l.boardId || (l.kind === 'container' ? 'container' : '—'), l.image, when(l.createdAt)].concat(admin ? [l.tenantId] : []),
      })), { id: 'lease-table', empty: 'No leases yet: "New lease" makes one.' }));
    } catch (err) {
      if (err.status !== 401) report(err);
    }
  }
  const reload = debounce(load);
  const offs = [events.subscribe('lease', reload), events.subscribe('job', reload)];
  newLeaseForm(formBox, ctx);
  load();
  return () => {
    alive = false;
    offs.forEach((off) => off());
  };
}

async function newLeaseForm(box, ctx) {
  const [images, boards] = await Promise.all([api('GET', '/images').catch(() => []), api('GET', '/boards').catch(() => [])]);
  const models = new Map();
  for (const b of boards) {
    const m = models.get(b.model) || { total: 0, free: 0 };
    m.total++;
    if (b.available || b.state === 'available') m.free++;
    models.set(b.model, m);
  }
  const kind = h('select', { id: 'lease-kind', name: 'kind' }, h('option', { value: 'board' }, 'a whole board'), h('option', { value: 'container' }, 'a container'), h('option', { value: 'any' }, 'a board, or a container if none is free'));
  const image = h('select', { id: 'lease-image', name: 'image', required: true }, images.map((i) => h('option', { value: i.name }, i.name + (i.description ? ' — ' + i.description : ''))));
  const model = h('select', { id: 'lease-model', name: 'model' }, h('option', { value: '' }, 'any model'), [...models].map(([m, n]) => h('option', { value: m }, `${m} (${n.free} of ${n.total} free)`)));
  const keys = h('textarea', { id: 'lease-keys', name: 'sshKeys', placeholder: 'ssh-ed25519 AAAA… you@laptop (one per line)', rows: 3, spellcheck: 'false' });
  const hostname = h('input', { id: 'lease-hostname', name: 'hostname', placeholder: 'optional', pattern: '[a-z0-9]([a-z0-9\\-]{0,61}[a-z0-9])?' }); // Chromium compiles patterns with the v flag: a bare - in [] is an error
  const memory = h('input', { id: 'lease-memory', name: 'memory', type: 'number', min: 16, max: 65536, step: 1, placeholder: 'MiB' });
  const cpus = h('input', { id: 'lease-cpus', name: 'cpus', type: 'number', min: 0.1, max: 64, step: 0.1, placeholder: 'e.g. 1.5' });
  const tenant = ctx.me.role === 'admin' ? h('input', { id: 'lease-tenant', name: 'tenant', placeholder: 'tenant id', required: true }) : null;
  const boardOnly = h('div', {}, h('label', {}, 'Board model', model));
  const containerOnly = h('div', { className: 'grid' }, h('label', {}, 'Memory (MiB)', memory), h('label', {}, 'CPUs', cpus));
  const error = h('p', { className: 'error', id: 'lease-error', hidden: true });
  const sync = () => {
    boardOnly.hidden = kind.value === 'container';
    containerOnly.hidden = kind.value === 'board';
  };
  kind.addEventListener('change', sync);
  sync();
  const form = h('form', { id: 'lease-form', autocomplete: 'off' },
    h('h2', {}, 'New lease'),
    h('div', { className: 'grid' }, h('label', {}, 'What', kind), h('label', {}, 'Image', image)),
    boardOnly,
    containerOnly,
    h('label', {}, 'SSH public keys', keys),
    h('div', { className: 'grid' }, h('label', {}, 'Hostname', hostname), tenant && h('label', {}, 'For tenant', tenant)),
    error,
    h('div', { className: 'row' }, h('button', { type: 'submit', className: 'primary' }, 'Create lease')));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.hidden = true;
    const body = { kind: kind.value, image: image.value, sshKeys: keys.value.split('\n').map((s) => s.trim()).filter(Boolean) };
    if (kind.value !== 'container' && model.value) body.model = model.value;
    if (kind.value !== 'board' && memory.value) body.memory = Number(memory.value);
    if (kind.value !== 'board' && cpus.value) body.cpus = Number(cpus.value);
    if (hostname.value.trim()) body.hostname = hostname.value.trim();
    if (tenant && tenant.value.trim()) body.tenant = tenant.value.trim();
    try {
      const r = await api('POST', '/leases', body);
      ctx.go('#/leases/' + enc(r.lease.id));
    } catch (err) {
      error.hidden = false;
      error.textContent = err.message;
    }
  });
  fill(box, form);
}

/** The SSH gateway's port, as the server says (GET /v1/ssh-gateway); 2222 until it has answered. */
let gatewayPort = 2222;
let gatewayHostKey = null;
const gatewayKnown = api('GET', '/ssh-gateway')
  .then((g) => {
    gatewayPort = g.port ?? gatewayPort;
    gatewayHostKey = g.hostKey ?? null;
  })
  .catch(() => {});

/** The SSH command for a board lease, through the SSH gateway on the controller. */
export function sshCommand(lease, host, port = gatewayPort) {
  const ip = lease.boardIp || (lease.iscsi && lease.iscsi.initiatorAddress) || '<board-ip>';
  return `ssh -J ${lease.id}@${host}:${port} root@${ip}`;
}

export function leaseView(ctx, id) {
  const { main, events } = ctx;
  const title = h('h1', {}, 'Lease ', h('span', { className: 'mono' }, id), ' ', h('span', { id: 'lease-state' }));
  const meta = h('div', { id: 'lease-meta' }, h('p', { className: 'muted' }, 'loading…'));
  const ssh = h('div', { id: 'lease-ssh' });
  const job = h('div', { id: 'job' });
  const consoleStatus = h('span', { id: 'console-status', className: 'console-status muted' }, 'console not open');
  const consoleBox = h('div', { id: 'console', className: 'console-box' });
  const buttons = {
    on: h('button', { type: 'button', id: 'btn-on' }, 'Power on'),
    off: h('button', { type: 'button', id: 'btn-off' }, 'Power off'),
    cycle: h('button', { type: 'button', id: 'btn-cycle' }, 'Power cycle'),
    reimage: h('button', { type: 'button', id: 'btn-reimage' }, 'Reimage'),
    release: h('button', { type: 'button', id: 'btn-release', className: 'danger' }, 'Release'),
  };
  main.append(
    h('p', {}, h('a', { href: '#/leases' }, '← leases')),
    title,
    h('div', { className: 'row', id: 'lease-actions' }, Object.values(buttons)),
    h('div', { className: 'card' }, meta, ssh),
    h('div', { className: 'card' }, h('h2', {}, 'Progress'), job),
    h('div', { className: 'card' }, h('div', { className: 'row' }, h('h2', {}, 'Console'), consoleStatus, h('a', { href: '/leases/' + enc(id), target: '_blank', rel: 'noopener', id: 'console-full' }, 'full screen')), consoleBox),
  );
  let lease = null;
  let jobId = null; // the job shown
  let shownJob = null; // the job as last rendered
  let leaseJobId = null; // the lease's own job, as last seen
  let con = null;
  let alive = true;

  function renderSsh(l) {
    fill(ssh, l.kind === 'board' && !GONE.has(l.state)
      ? [h('h2', {}, 'SSH'), h('code', { className: 'ssh', id: 'ssh-command' }, sshCommand(l, location.hostname)), h('p', { className: 'muted small' }, 'With one of the lease’s SSH keys. Console over SSH: ', h('code', {}, `ssh -t -p ${gatewayPort} console+${l.id}@${location.hostname}`)),
        ...(gatewayHostKey ? [h('p', { className: 'muted small' }, 'The gateway’s host key, for ~/.ssh/known_hosts (check it before you trust the first connection): ', h('code', { id: 'ssh-host-key', className: 'wrap' }, `[${location.hostname}]:${gatewayPort} ${gatewayHostKey}`))] : [])]
      : []);
  }

  function closeConsole(why) {
    con?.close();
    con = null;
    consoleStatus.textContent = why;
    consoleStatus.className = 'console-status muted';
  }

  function renderLease(l) {
    // Released is final: an older copy arriving late (the DELETE's answer after the event stream's
    // "released", when the release job is quicker than the answer) must not bring the lease back.
    if (lease && lease.id === l.id && lease.state === 'released' && l.state !== 'released') return;
    lease = l;
    void gatewayKnown.then(() => lease === l && renderSsh(l));
    fill(title.querySelector('#lease-state'), badge(l.state));
    fill(meta, dl([
      ['State', l.state + (l.stateReason ? ' — ' + l.stateReason : '')],
      ['Kind', l.kind],
      ['Board', l.boardId],
      ['Container', l.container ? `${l.container.memoryMb} MiB, ${l.container.cpus} CPUs` : undefined],
      ['Image', l.image],
      ['Hostname', l.hostname],
      ['SSH keys', l.sshKeys && l.sshKeys.length ? l.sshKeys.map((k) => k.split(' ').slice(-1)[0]).join(', ') : 'none'],
      ['Created', when(l.createdAt)],
      ['Expires', when(l.expiresAt)],
      ['Released', when(l.releasedAt)],
    ], { id: 'lease-dl' }));
    renderSsh(l);
    const gone = GONE.has(l.state);
    for (const b of Object.values(buttons)) b.disabled = gone;
    if (gone) closeConsole('console closed: lease ' + l.state);
    else if (!con) {
      con = openConsole(consoleBox, l.id, (text, cls) => {
        consoleStatus.textContent = text;
        consoleStatus.className = 'console-status ' + cls;
      });
    }
    // The lease's job (provision, reimage, release) when it changes; power jobs are not the lease's and show by their events.
    if (l.jobId && l.jobId !== leaseJobId) {
      leaseJobId = l.jobId;
      loadJob(l.jobId);
    }
  }

  function renderJob(j) {
    // An ended job is final, like a released lease: a late copy of it running (an action's answer) is old.
    if (shownJob && shownJob.id === j.id && shownJob.state !== 'running' && j.state === 'running') return;
    shownJob = j;
    jobId = j.id;
    const dur = (s) => (s.startedAt && s.endedAt ? ((Date.parse(s.endedAt) - Date.parse(s.startedAt)) / 1000).toFixed(1) + ' s' : '');
    fill(job,
      h('p', { id: 'job-head' }, `${j.kind} job `, h('span', { className: 'mono' }, j.id), ' ', badge(j.state), j.error ? h('span', { className: 'error' }, ' ' + j.error) : null),
      h('ol', { className: 'steps', id: 'job-steps' }, j.steps.map((s) => h('li', { dataset: { step: s.name, state: s.state } }, badge(s.state), h('span', {}, s.name), h('span', { className: 'muted small' }, [dur(s), s.attempts > 1 ? `${s.attempts} attempts` : ''].filter(Boolean).join(' · ')), s.error ? h('span', { className: 'error small' }, s.error) : null))));
  }

  async function loadJob(jid) {
    jobId = jid;
    try {
      const j = await api('GET', '/jobs/' + enc(jid));
      if (alive && j.id === jobId) renderJob(j);
    } catch (err) {
      if (err.status !== 401) report(err);
    }
  }

  async function load() {
    try {
      const l = await api('GET', '/leases/' + enc(id));
      if (alive) renderLease(l);
    } catch (err) {
      if (err.status === 404) fill(meta, h('p', { className: 'error', id: 'lease-missing' }, 'No such lease (or not yours).'));
      else if (err.status !== 401) report(err);
      for (const b of Object.values(buttons)) b.disabled = true;
    }
  }

  async function act(label, method, path, body, okLabel) {
    if (!(await confirmDialog(`${label} lease ${id}?`, okLabel || label))) return;
    try {
      const r = await api(method, path, body);
      flash(`${label}: requested`, 'info');
      if (r && r.job) {
        jobId = r.job.id;
        renderJob(r.job);
      }
      if (r && r.lease) renderLease(r.lease);
    } catch (err) {
      report(err);
    }
  }
  buttons.on.onclick = () => act('Power on', 'POST', `/leases/${enc(id)}/power`, { action: 'on' });
  buttons.off.onclick = () => act('Power off', 'POST', `/leases/${enc(id)}/power`, { action: 'off' });
  buttons.cycle.onclick = () => act('Power cycle', 'POST', `/leases/${enc(id)}/power`, { action: 'cycle' });
  buttons.reimage.onclick = () => act('Reimage', 'POST', `/leases/${enc(id)}/reimage`, {}, 'Reimage (the disk is wiped)');
  buttons.release.onclick = () => act('Release', 'DELETE', `/leases/${enc(id)}`, undefined, 'Release (the disk is destroyed)');

  const offs = [
    events.subscribe('lease', (l) => l.id === id && alive && renderLease(l)),
    events.subscribe('job', (j) => {
      if (!alive || j.leaseId !== id) return;
      if (j.id === jobId || j.state === 'running') renderJob(j); // the current job, or a newer one starting
    }),
  ];
  load();
  return () => {
    alive = false;
    offs.forEach((off) => off());
    closeConsole('');
  };
}

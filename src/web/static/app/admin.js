// Operator views (admin token): boards with live state and who holds them, a board's boot-event timeline,
// discovered MACs and enrolment, images (list and import from a file on the server), tenants and tokens,
// and health.
import { api } from './api.js';
import { badge, confirmDialog, dl, fill, flash, h, table, when } from './dom.js';

const enc = encodeURIComponent;
const report = (err) => err.status !== 401 && flash(err.message || String(err), 'error');

/** Runs `fn` now and every `ms` while the view lives (and on demand: the returned function). */
function poll(fn, ms) {
  let timer;
  let stopped = false;
  const run = async () => {
    clearTimeout(timer);
    await fn();
    if (!stopped) timer = setTimeout(run, ms);
  };
  run();
  return { now: run, stop: () => ((stopped = true), clearTimeout(timer)) };
}

/** A board's role: whole, or shared with its engine's state (and why it is not ready). */
function role(b) {
  if (b.role !== 'shared') return 'whole';
  const e = b.engine || { engine: 'none' };
  return `shared: ${e.engine}${e.reason ? ' (' + e.reason + ')' : ''}`;
}

export function boardsView(ctx) {
  const box = h('div', { id: 'boards' }, h('p', { className: 'muted' }, 'loading…'));
  ctx.main.append(h('h1', {}, 'Boards'), box);
  const p = poll(async () => {
    try {
      const [boards, leases] = await Promise.all([api('GET', '/boards'), api('GET', '/leases')]);
      const live = new Map(leases.filter((l) => l.boardId && l.state !== 'released').map((l) => [l.boardId, l]));
      fill(box, table(['Board', 'Model', 'Arch', 'State', 'IP', 'MAC', 'Lease', 'Tenant', 'Role'], boards.map((b) => {
        const l = live.get(b.id);
        return {
          dataset: { board: b.id, state: b.state },
          cells: [h('a', { href: '#/boards/' + enc(b.id) }, b.id), b.model, b.arch, badge(b.state), b.ip, h('span', { className: 'mono' }, b.mac), l ? h('a', { href: '#/leases/' + enc(l.id) }, l.id) : '—', l ? l.tenantId : '—', role(b)],
        };
      }), { id: 'board-table', empty: 'No boards enrolled: see Discovered.' }));
    } catch (err) {
      report(err);
    }
  }, 3000);
  const offs = [ctx.events.subscribe('lease', () => p.now()), ctx.events.subscribe('board', () => p.now())];
  return () => (p.stop(), offs.forEach((o) => o()));
}

/** One board event as a timeline line: DHCP, TFTP (size, time, speed), phone-home, power, state, errors. */
function eventLine(ev) {
  const d = ev.details || {};
  const extra = [];
  if (ev.type === 'tftp' && d.bytes !== undefined) {
    extra.push(fmtBytes(d.bytes));
    if (d.ms !== undefined) extra.push(d.ms + ' ms');
    if (d.mbps !== undefined) extra.push(d.mbps + ' MB/s');
  }
  return h('li', { dataset: { type: ev.type } }, h('time', { datetime: ev.time }, new Date(ev.time).toLocaleTimeString()), badge(ev.type, ev.type === 'error' ? 'error' : ''), h('span', { className: 'wrap' }, ev.message), extra.length ? h('span', { className: 'muted small' }, extra.join(' · ')) : null);
}

function fmtBytes(n) {
  if (n >= 1 << 20) return (n / (1 << 20)).toFixed(1) + ' MiB';
  if (n >= 1024) return (n / 1024).toFixed(1) + ' KiB';
  return n + ' B';
}

export function boardView(ctx, id) {
  const meta = h('div', { id: 'board-meta' }, 'loading…');
  const timeline = h('ol', { className: 'timeline', id: 'timeline' });
  const stateBtn = h('button', { type: 'button', id: 'btn-maintenance' }, 'Maintenance…');
  ctx.main.append(h('p', {}, h('a', { href: '#/boards' }, '← boards')), h('h1', {}, 'Board ', h('span', { className: 'mono' }, id)), h('div', { className: 'row' }, stateBtn), h('div', { className: 'card' }, meta), h('div', { className: 'card' }, h('h2', {}, 'Boot events (newest first, live)'), timeline));
  let board = null;
  stateBtn.onclick = async () => {
    const to = board && board.state === 'maintenance' ? 'available' : 'maintenance';
    if (!(await confirmDialog(`Put board ${id} in ${to}?`, to === 'maintenance' ? 'Maintenance' : 'Make available'))) return;
    try {
      await api('POST', `/boards/${enc(id)}/state`, { state: to, reason: 'from the web UI' });
      p.now();
    } catch (err) {
      report(err);
    }
  };
  const p = poll(async () => {
    try {
      const [b, evs] = await Promise.all([api('GET', '/boards/' + enc(id)), api('GET', `/boards/${enc(id)}/events`)]);
      board = b;
      stateBtn.textContent = b.state === 'maintenance' ? 'Make available…' : 'Maintenance…';
      fill(meta, dl([['State', h('span', {}, badge(b.state), b.stateReason ? ' ' + b.stateReason : '')], ['Model', b.model], ['Arch', b.arch], ['MAC', b.mac], ['IP', b.ip], ['Image', b.image], ['Serial', b.serial], ['Port', b.port], ['Power', b.power && b.power.driver], ['Role', role(b)], ['Enrolled', when(b.createdAt)]]));
      fill(timeline, evs.length ? evs.slice().reverse().map(eventLine) : h('li', { className: 'muted' }, 'no events yet: power the board on and its DHCP and TFTP requests show here'));
    } catch (err) {
      if (err.status === 404) fill(meta, h('p', { className: 'error' }, 'No such board.'));
      report(err);
    }
  }, 2000);
  return () => p.stop();
}

export function discoveredView(ctx) {
  const box = h('div', { id: 'discovered' }, 'loading…');
  const formBox = h('div', { id: 'enrol-box' });
  ctx.main.append(h('h1', {}, 'Discovered MACs'), h('p', { className: 'muted' }, 'Boards that asked our DHCP server for an address but are not enrolled.'), box, formBox);
  let images = [];
  api('GET', '/images').then((i) => (images = i), report);
  const p = poll(async () => {
    try {
      const list = await api('GET', '/discovered');
      fill(box, table(['MAC', 'First seen', 'Last seen', 'Requests', 'Vendor class', ''], list.map((d) => ({
        dataset: { mac: d.mac },
        cells: [h('span', { className: 'mono' }, d.mac), when(d.firstSeen), when(d.lastSeen), d.count, d.vendorClass || '', h('button', { type: 'button', className: 'enrol', onclick: () => enrolForm(d.mac) }, 'Enrol from here')],
      })), { id: 'discovered-table', empty: 'No unknown MACs seen.' }));
    } catch (err) {
      report(err);
    }
  }, 3000);

  function enrolForm(mac) {
    const f = (name, props) => h('input', { name, id: 'enrol-' + name, ...props });
    const arch = h('select', { name: 'arch', id: 'enrol-arch' }, h('option', { value: 'armv7' }, 'armv7'), h('option', { value: 'arm64' }, 'arm64'));
    const image = h('select', { name: 'image', id: 'enrol-image' }, images.map((i) => h('option', { value: i.name }, i.name)));
    const power = h('textarea', { name: 'power', id: 'enrol-power', rows: 2, spellcheck: 'false' });
    power.value = '{"driver": "manual"}';
    const error = h('p', { className: 'error', hidden: true, id: 'enrol-error' });
    const form = h('form', { id: 'enrol-form', className: 'card', autocomplete: 'off' },
      h('h2', {}, 'Enrol ', h('span', { className: 'mono' }, mac)),
      h('div', { className: 'grid' },
        h('label', {}, 'Board id', f('id', { required: true, placeholder: 'bpi-07' })),
        h('label', {}, 'Model', f('model', { required: true, placeholder: 'bananapi-m2u', list: 'enrol-models' })),
        h('label', {}, 'Arch', arch),
        h('label', {}, 'Reserved IP', f('ip', { required: true, placeholder: '10.77.0.20' })),
        h('label', {}, 'Default image', image),
        h('label', {}, 'Serial line (optional)', f('serial', { placeholder: '/dev/ttyUSB0 or tcp://host:port' }))),
      h('datalist', { id: 'enrol-models' }, ['qemu-virt-armv7', 'qemu-virt-arm64', 'bananapi-m2u', 'bananapi', 'bananapro'].map((m) => h('option', { value: m }))),
      h('label', {}, 'Power (JSON: driver and its parameters)', power),
      error,
      h('div', { className: 'row' }, h('button', { type: 'submit', className: 'primary' }, 'Enrol')));
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      error.hidden = true;
      const v = (n) => form.elements[n].value.trim();
      let pw;
      try {
        pw = JSON.parse(power.value);
      } catch (err) {
        error.hidden = false;
        return void (error.textContent = 'Power is not JSON: ' + err.message);
      }
      const body = { id: v('id'), mac, model: v('model'), arch: arch.value, ip: v('ip'), image: image.value, power: pw };
      if (v('serial')) body.serial = v('serial');
      try {
        const b = await api('POST', '/boards', body);
        flash(`Board ${b.id} enrolled.`, 'info');
        ctx.go('#/boards/' + enc(b.id));
      } catch (err) {
        error.hidden = false;
        error.textContent = err.message;
      }
    });
    fill(formBox, form);
    form.elements.id.focus();
  }
  return () => p.stop();
}

export function imagesView(ctx) {
  const box = h('div', { id: 'images' }, 'loading…');
  const jobs = h('div', { id: 'import-jobs' });
  const error = h('p', { className: 'error', hidden: true, id: 'import-error' });
  const form = h('form', { id: 'import-form', className: 'card', autocomplete: 'off' },
    h('h2', {}, 'Import an image from a file on the server'),
    h('div', { className: 'grid' }, h('label', {}, 'Name', h('input', { name: 'name', required: true, placeholder: 'debian-12' })), h('label', {}, 'Path on the server', h('input', { name: 'path', required: true, placeholder: '/srv/images/debian-12.img.xz' }))),
    error,
    h('button', { type: 'submit', className: 'primary' }, 'Import'));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.hidden = true;
    try {
      await api('POST', '/images', { name: form.elements.name.value.trim(), source: { path: form.elements.path.value.trim() } });
      flash('Import started.', 'info');
      p.now();
    } catch (err) {
      error.hidden = false;
      error.textContent = err.message;
    }
  });
  // Upload from this browser: the file is the request body, the spec rides in X-Dozen-Import (POST
  // /v1/images, as `dozen images import --upload` sends it); XHR because fetch has no upload progress.
  const upError = h('p', { className: 'error', hidden: true, id: 'upload-error' });
  const upProgress = h('progress', { id: 'upload-progress', max: 100, value: 0, hidden: true });
  const upStatus = h('span', { id: 'upload-status', className: 'muted small' });
  const upForm = h('form', { id: 'upload-form', className: 'card', autocomplete: 'off' },
    h('h2', {}, 'Upload an image from this computer'),
    h('div', { className: 'grid' }, h('label', {}, 'Name', h('input', { name: 'name', required: true, placeholder: 'my-image' })), h('label', {}, 'Disk image (raw, .xz, .gz, .zst, qcow2)', h('input', { name: 'file', type: 'file', required: true }))),
    h('div', { className: 'row' }, upProgress, upStatus),
    upError,
    h('button', { type: 'submit', className: 'primary' }, 'Upload and import'));
  upForm.addEventListener('submit', (e) => {
    e.preventDefault();
    upError.hidden = true;
    const file = upForm.elements.file.files[0];
    if (!file) return;
    const xhr = new XMLHttpRequest();
    xhr.open('POST', '/v1/images');
    xhr.setRequestHeader('content-type', 'application/octet-stream');
    xhr.setRequestHeader('x-dozen-import', JSON.stringify({ name: upForm.elements.name.value.trim() }));
    upProgress.hidden = false;
    xhr.upload.onprogress = (ev) => {
      if (!ev.lengthComputable) return;
      upProgress.value = Math.round((100 * ev.loaded) / ev.total);
      upStatus.textContent = `${fmtBytes(ev.loaded)} of ${fmtBytes(ev.total)} sent`;
    };
    xhr.onload = () => {
      let body = {};
      try {
        body = JSON.parse(xhr.responseText || '{}');
      } catch {
        /* not JSON */
      }
      if (xhr.status >= 200 && xhr.status < 300) {
        upProgress.value = 100;
        upStatus.textContent = `sent: import job ${body.id || body.job?.id || ''} started`;
        p.now();
      } else {
        upError.hidden = false;
        upError.textContent = body.error || `upload failed (${xhr.status})`;
      }
    };
    xhr.onerror = () => {
      upError.hidden = false;
      upError.textContent = 'upload failed: the connection was lost';
    };
    xhr.send(file);
  });
  ctx.main.append(h('h1', {}, 'Images'), box, form, upForm, jobs);
  const p = poll(async () => {
    try {
      const [images, js] = await Promise.all([api('GET', '/images'), api('GET', '/images/jobs').catch(() => [])]);
      fill(box, table(['Name', 'Arches', 'Origin', 'Description'], images.map((i) => ({ dataset: { image: i.name }, cells: [i.name, Object.keys(i.arches || {}).join(', '), i.builtIn ? 'built in' : 'imported', h('span', { className: 'wrap' }, i.description || '')] })), { id: 'image-table' }));
      fill(jobs, js.length ? [h('h2', {}, 'Imports'), table(['Job', 'Image', 'Phase', 'Progress', 'Error'], js.map((j) => [j.id, j.name || '', j.state === 'running' ? j.phase : j.state, j.state === 'running' && j.bytesTotal ? Math.round((100 * (j.bytesDone || 0)) / j.bytesTotal) + ' %' : j.bytesDone ? fmtBytes(j.bytesDone) : '', j.error?.message || '']))] : []);
    } catch (err) {
      report(err);
    }
  }, 5000);
  return () => p.stop();
}

export function tenantsView(ctx) {
  const box = h('div', { id: 'tenants' }, 'loading…');
  const shown = h('div', { id: 'new-token' });
  const error = h('p', { className: 'error', hidden: true, id: 'tenant-error' });
  const form = h('form', { id: 'tenant-form', className: 'card', autocomplete: 'off' },
    h('h2', {}, 'New tenant'),
    h('div', { className: 'grid' }, h('label', {}, 'Id', h('input', { name: 'id', required: true, placeholder: 'acme' })), h('label', {}, 'Name', h('input', { name: 'name', required: true, placeholder: 'Acme Robotics' }))),
    error,
    h('button', { type: 'submit', className: 'primary' }, 'Create tenant and its first token'));
  const revokeError = h('p', { className: 'error', hidden: true, id: 'revoke-error' });
  const revokeForm = h('form', { id: 'revoke-form', className: 'card', autocomplete: 'off' },
    h('h2', {}, 'Revoke a token'),
    h('p', { className: 'muted small' }, 'By its id (the part after dz_ up to the next _, shown with every new token). The API keeps no list of tokens to browse.'),
    h('div', { className: 'row' }, h('input', { name: 'tokenId', required: true, placeholder: 'token id (12 hex digits)', pattern: '[0-9a-f]{12}' }), h('button', { type: 'submit', className: 'danger' }, 'Revoke')),
    revokeError);

  /** A new token, shown once: the API keeps only its hash. */
  function showToken(tenant, r) {
    const revoke = h('button', { type: 'button', className: 'danger', id: 'revoke-new' }, 'Revoke this token');
    revoke.onclick = () => revokeToken(r.tokenId);
    fill(shown, h('div', { className: 'card' },
      h('h2', {}, `New token for ${tenant}`),
      h('p', { className: 'muted small' }, 'Shown once: copy it now. Only its hash is kept.'),
      h('div', { className: 'secret', id: 'token-value' }, r.token),
      dl([['Token id', h('span', { className: 'mono', id: 'token-id' }, r.tokenId)], ['Expires', when(r.expiresAt) || 'never']]),
      h('div', { className: 'row' }, h('button', { type: 'button', onclick: () => fill(shown) }, 'Done, hide it'), revoke)));
  }

  async function revokeToken(tokenId) {
    if (!(await confirmDialog(`Revoke token ${tokenId}? Everything using it stops working at once.`, 'Revoke'))) return;
    try {
      await api('DELETE', '/tokens/' + enc(tokenId));
      fill(shown);
      flash(`Token ${tokenId} revoked.`, 'info');
    } catch (err) {
      revokeError.hidden = false;
      revokeError.textContent = err.message;
    }
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.hidden = true;
    try {
      const r = await api('POST', '/tenants', { id: form.elements.id.value.trim(), name: form.elements.name.value.trim() });
      form.reset();
      showToken(r.tenant.id, r);
      load();
    } catch (err) {
      error.hidden = false;
      error.textContent = err.message;
    }
  });
  revokeForm.addEventListener('submit', (e) => {
    e.preventDefault();
    revokeError.hidden = true;
    revokeToken(revokeForm.elements.tokenId.value.trim()).then(() => revokeForm.reset());
  });

  async function load() {
    try {
      const tenants = await api('GET', '/tenants');
      fill(box, table(['Tenant', 'Name', 'Created', ''], tenants.map((t) => ({
        dataset: { tenant: t.id },
        cells: [t.id, t.name, when(t.createdAt), h('button', { type: 'button', className: 'new-token', onclick: () => newToken(t.id) }, 'New token')],
      })), { id: 'tenant-table', empty: 'No tenants yet.' }));
    } catch (err) {
      report(err);
    }
  }
  async function newToken(id) {
    try {
      showToken(id, await api('POST', `/tenants/${enc(id)}/tokens`, {}));
    } catch (err) {
      report(err);
    }
  }
  ctx.main.append(h('h1', {}, 'Tenants and tokens'), shown, box, form, revokeForm);
  load();
}

/** A nested object as definition lists (health counters). */
function tree(o) {
  if (o === null || typeof o !== 'object') return typeof o === 'boolean' ? badge(o ? 'yes' : 'no', o ? 'ok' : 'error') : String(o);
  return dl(Object.entries(o).map(([k, v]) => [k, tree(v)]));
}

export function healthView(ctx) {
  const box = h('div', { id: 'health' }, 'loading…');
  ctx.main.append(h('h1', {}, 'Health'), h('p', { className: 'muted small' }, 'From GET /v1/health/detail (tgtd, storage space, Docker engines, board isolation, the lab) and GET /v1/health (the DHCP, TFTP and console counters).'), box);
  const p = poll(async () => {
    try {
      const [d, hl] = await Promise.all([api('GET', '/health/detail'), api('GET', '/health')]);
      const problems = d.problems.length ? h('ul', { id: 'health-problems' }, ...d.problems.map((x) => h('li', {}, x))) : h('p', { className: 'muted small' }, 'No problems.');
      const { ok: _ok, problems: _p, ...parts } = d;
      fill(box, h('div', { className: 'card' }, h('p', {}, 'Server ', badge(d.ok ? 'ok' : 'problems', d.ok ? 'ok' : 'error')), problems, tree(parts), h('h2', {}, 'Counters'), tree(hl)));
    } catch (err) {
      report(err);
    }
  }, 5000);
  return () => p.stop();
}

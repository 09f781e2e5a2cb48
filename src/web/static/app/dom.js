// Small DOM helpers: elements are built with textContent and properties, never innerHTML, so data from the
// API (names, messages, console titles) can never become markup.

/** h('a', { href: '#/x', className: 'btn', onclick }, 'text', child, …): attributes starting with "on" are listeners. */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'className' || k === 'textContent' || k === 'value' || k === 'checked' || k === 'disabled' || k === 'hidden') el[k] = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A table in a horizontally scrolling wrapper (phones): rows are arrays of cells (strings or nodes). */
export function table(headers, rows, o = {}) {
  return h('div', { className: 'table-wrap' },
    h('table', { id: o.id, className: o.className },
      h('thead', {}, h('tr', {}, headers.map((x) => h('th', {}, x)))),
      h('tbody', {}, rows.length ? rows.map((r) => h('tr', { dataset: r.dataset || {} }, (r.cells || r).map((c) => h('td', {}, c))))
        : h('tr', {}, h('td', { colspan: headers.length, className: 'muted' }, o.empty || 'nothing here yet')))));
}

/** A definition list from [label, value] pairs (values left out when empty). */
export function dl(pairs, o = {}) {
  return h('dl', { className: 'meta', id: o.id }, pairs.filter(([, v]) => v !== undefined && v !== null && v !== '').flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

export const badge = (text, kind) => h('span', { className: 'badge ' + (kind || String(text).replace(/[^a-z-]/gi, '')) }, text);

export function when(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString();
}

/**
 * A modal confirmation: resolves true for the confirm button, false for cancel or Escape. The dialog is in
 * the page (index.html) and reused.
 */
export function confirmDialog(message, okLabel = 'Confirm') {
  const dlg = document.getElementById('confirm');
  fill(dlg.querySelector('.confirm-text'), message);
  const ok = dlg.querySelector('.confirm-ok');
  ok.textContent = okLabel;
  return new Promise((resolve) => {
    const done = (v) => {
      dlg.removeEventListener('close', onClose);
      resolve(v);
    };
    const onClose = () => done(dlg.returnValue === 'ok');
    dlg.returnValue = '';
    dlg.addEventListener('close', onClose);
    dlg.showModal();
  });
}

/** A one-line message at the top of the page; errors in red. */
export function flash(text, kind = 'info') {
  const el = document.getElementById('flash');
  if (!text) return void (el.hidden = true);
  el.hidden = false;
  el.className = 'flash ' + kind;
  el.textContent = text;
}

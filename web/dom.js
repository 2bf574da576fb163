// DOM and formatting helpers. Text always goes in through textContent,
// never innerHTML: names, labels and YAML come from the cluster.

/** el('tag#id.cls', {attr}, ...children): an element; strings become text. */
export function el(spec, attrs = {}, ...children) {
  const [head, ...classes] = spec.split('.');
  const [tag, id] = head.split('#');
  const node = document.createElement(tag || 'div');
  if (id) node.id = id;
  if (classes.length) node.className = classes.join(' ');
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') node.addEventListener(key.slice(2), value);
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace the children of `node`. */
export function fill(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

export function fmtCount(n) {
  if (n === undefined || n === null) return '–';
  return Number(n).toLocaleString('en-US');
}

export function fmtBytes(n) {
  if (n === undefined || n === null) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = Number(n);
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

/** "12s ago", "3m ago"... with the absolute time in the title. */
export function fmtAgo(iso, now = Date.now()) {
  if (!iso) return el('span', {}, '–');
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return el('span', {}, iso);
  const s = Math.max(0, Math.round((now - t) / 1000));
  let text;
  if (s < 60) text = `${s}s ago`;
  else if (s < 3600) text = `${Math.floor(s / 60)}m ago`;
  else if (s < 86400) text = `${Math.floor(s / 3600)}h ago`;
  else text = `${Math.floor(s / 86400)}d ago`;
  return el('span', { title: new Date(t).toISOString() }, text);
}

export const VERDICT_LABEL = { forwarded: 'allowed', audit: 'would drop', dropped: 'dropped' };

export function verdictBadge(verdict) {
  const v = verdict || 'forwarded';
  return el(`span.badge.${v}`, {}, VERDICT_LABEL[v] || v);
}

export function portLabel(p) {
  const proto = p.protocol || '';
  return proto.startsWith('ICMP') ? proto : `${p.port}/${proto}`;
}

/** A small key/value list. */
export function kv(pairs) {
  return el('dl.kv', {}, pairs.filter(Boolean).flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
}

export function chips(labels) {
  const entries = Object.entries(labels || {});
  if (!entries.length) return el('span.hint', {}, 'none');
  return el('div', {}, entries.map(([k, v]) => el('span.chip', {}, `${k}=${v}`)));
}

/** Parse "15m", "1h", "24h" into milliseconds (null for "" / unknown). */
export function durationMs(text) {
  const m = /^(\d+)([smhd])$/.exec(text || '');
  if (!m) return null;
  return Number(m[1]) * { s: 1e3, m: 60e3, h: 3600e3, d: 86400e3 }[m[2]];
}

/** An external address, with the name the pod source gives it when it has one. */
/**
 * What the agent lost, for the banner: `degraded` of /api/graph (a full
 * flow table leaves connections out; a full ring buffer only delays them).
 * Empty when nothing was lost.
 */
export function degradedText(degraded, incomplete) {
  if (!degraded?.length) return '';
  const parts = degraded.map((e) => {
    const when = e.until ? `from ${e.from} to ${e.until}` : `since ${e.from}, ongoing`;
    return `${e.message} (${when})`;
  });
  const head = incomplete ? 'The graph is incomplete.' : 'The agent is degraded.';
  return `${head} ${parts.join(' ')}`;
}

export function externalLabel(n) {
  return n.name && n.name !== n.id ? `${n.name} · ${n.id}` : n.id;
}

/** The confirmation dialog with its OK disabled; `answer` resolves on a choice. */
export function openDialog(title, okLabel) {
  const dialog = document.getElementById('confirm-dialog');
  const body = document.getElementById('confirm-body');
  const ok = document.getElementById('confirm-ok');
  const cancel = document.getElementById('confirm-cancel');
  document.getElementById('confirm-title').textContent = title;
  ok.textContent = okLabel;
  ok.className = 'primary';
  ok.disabled = true;
  dialog.showModal();
  const answer = new Promise((resolve) => {
    const done = (value) => {
      ok.removeEventListener('click', yes);
      cancel.removeEventListener('click', no);
      dialog.removeEventListener('cancel', no);
      dialog.close();
      resolve(value);
    };
    const yes = () => done(true);
    const no = () => done(false);
    ok.addEventListener('click', yes);
    cancel.addEventListener('click', no);
    dialog.addEventListener('cancel', no);
  });
  return { body, ok, answer };
}

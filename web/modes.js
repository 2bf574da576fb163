// Namespace modes: observe / audit / enforce per namespace. A change first
// shows its impact (/api/impact: how many recent flows the policies in
// force would deny) and the namespace's readiness, then PUTs with the token.
// Going up (to audit or enforce) is disabled while the namespace is not
// ready, saying why (/api/status' reason, as `weir mode set` refuses it);
// a namespace promoted automatically shows its next step and when.

import * as api from './client.js';
import { el, fill, fmtCount, portLabel } from './dom.js';

const MODES = ['observe', 'audit', 'enforce'];

export class Modes {
  constructor(root, { onChanged }) {
    this.root = root;
    this.onChanged = onChanged;
    this.modes = { modes: {}, default_mode: 'observe' };
    this.namespaces = [];
    this.error = null;
    this.readiness = null;
    this.dialog = document.getElementById('confirm-dialog');
    this.render();
    this.loadReadiness();
    // Readiness moves with time (the quiet period runs out): while shown.
    setInterval(() => { if (this.root.offsetParent !== null) this.loadReadiness(); }, 3000);
  }

  async loadReadiness() {
    try {
      const [status, modes] = await Promise.all([api.get('/api/status'), api.get('/api/modes')]);
      this.readiness = Object.fromEntries((status.namespaces || []).map((n) => [n.namespace, n]));
      // The next automatic step moves with time too.
      this.modes = modes || this.modes;
    } catch {
      // Unknown readiness gates nothing here: the agent still refuses.
      this.readiness = null;
    }
    this.render();
  }

  /** Why `ns` may not go up now, or null. */
  notReady(ns) {
    if (!this.readiness) return null;
    const r = this.readiness[ns];
    if (!r) return 'nothing was learned from or to it yet';
    return r.ready ? null : (r.reason || 'it is not ready (see weir status)');
  }

  mode(ns) { return this.modes.modes?.[ns] || this.modes.default_mode || 'observe'; }

  setModes(modes) {
    this.modes = modes || this.modes;
    this.error = null;
    this.render();
  }

  setError(error) {
    this.error = error;
    this.render();
  }

  setNamespaces(names) {
    const sorted = [...new Set([...names, ...Object.keys(this.modes.modes || {})])].sort();
    if (sorted.join(',') === this.namespaces.join(',')) return;
    this.namespaces = sorted;
    this.render();
  }

  render() {
    const rows = this.namespaces.map((ns) => {
      const current = MODES.indexOf(this.mode(ns));
      const why = this.notReady(ns);
      const row = el('div.modes-row', { 'data-namespace': ns },
        el('span', {}, el('strong', {}, ns)),
        el('span.segmented', { role: 'radiogroup', 'aria-label': `Mode of ${ns}` },
          MODES.map((m, i) => {
            const blocked = Boolean(why) && i > current;
            return el(`button.${m}${this.mode(ns) === m ? '.on' : ''}`, {
              type: 'button',
              role: 'radio',
              'aria-checked': String(this.mode(ns) === m),
              'data-mode': m,
              disabled: blocked,
              title: blocked ? `not ready: ${why}` : undefined,
              onclick: () => { if (this.mode(ns) !== m) this.confirm(ns, m); },
            }, m);
          })));
      const gated = why && current < MODES.length - 1
        ? el('p.warn.not-ready', { 'data-namespace': ns },
          `${MODES.slice(current + 1).join(' and ')} disabled: not ready: ${why}`)
        : null;
      return [row, gated, this.promotionNote(ns), this.guardNote(ns)].filter(Boolean);
    }).flat();
    fill(this.root,
      el('p.hint', {}, 'observe: nothing is dropped. audit: would-drop verdicts, nothing dropped. enforce: what the policies in force deny is dropped. observe again is the kill switch.'),
      this.error ? el('p.bad', {}, `Modes unavailable: ${this.error.message}`) : null,
      rows.length ? rows : el('p.hint', {}, 'No namespace seen yet.'));
  }

  /** Automatic promotion of `ns` (weir.dev/promote: auto): next step and when. */
  promotionNote(ns) {
    const p = this.modes.promotion?.[ns];
    if (!p) return null;
    const last = p.last ? ` (last: ${p.last.from} → ${p.last.to} at ${p.last.time})` : '';
    return el('p.hint.promotion', { 'data-namespace': ns }, `${p.message}${last}`);
  }

  /** What the guard says of `ns`: its last revert, or its open window. */
  guardNote(ns) {
    const reverted = this.modes.reverted?.[ns];
    if (reverted) return el('p.bad.guard-reverted', { 'data-namespace': ns }, reverted.message);
    const window = this.modes.guarded?.[ns];
    if (window) {
      return el('p.hint.guard-window', { 'data-namespace': ns },
        `guarded until ${window.until}: dropping ${window.max_drops} of its ${window.learned_edges} learned edges reverts it to audit (${window.dropped_edges.length} dropped so far)`);
    }
    return null;
  }

  /** The confirmation dialog: impact and readiness, then the change. */
  async confirm(ns, mode) {
    const title = document.getElementById('confirm-title');
    const body = document.getElementById('confirm-body');
    const ok = document.getElementById('confirm-ok');
    const cancel = document.getElementById('confirm-cancel');
    title.textContent = `Switch ${ns} from ${this.mode(ns)} to ${mode}?`;
    ok.textContent = `Switch to ${mode}`;
    ok.className = mode === 'enforce' ? 'danger' : 'primary';
    ok.disabled = true;
    fill(body, el('p.hint', {}, 'Checking the impact…'));
    this.dialog.showModal();

    const [impact, status] = await Promise.allSettled([
      mode === 'observe' ? Promise.resolve(null) : api.get('/api/impact', { namespace: ns, mode, window: '1h' }),
      api.get('/api/status'),
    ]);
    const readiness = impact.value?.readiness
      ?? (status.status === 'fulfilled' ? (status.value.namespaces || []).find((n) => n.namespace === ns) : null);
    fill(body,
      impactView(mode, impact),
      el('h3', {}, 'Readiness'),
      readinessView(readiness));
    ok.disabled = false;

    const result = await new Promise((resolve) => {
      const done = (value) => {
        ok.removeEventListener('click', onOk);
        cancel.removeEventListener('click', onCancel);
        this.dialog.removeEventListener('cancel', onCancel);
        resolve(value);
      };
      const onOk = () => done(true);
      const onCancel = () => done(false);
      ok.addEventListener('click', onOk);
      cancel.addEventListener('click', onCancel);
      this.dialog.addEventListener('cancel', onCancel);
    });
    if (!result) { this.dialog.close(); return; }
    ok.disabled = true;
    try {
      const modes = await api.write('PUT', `/api/modes/${encodeURIComponent(ns)}`, { mode, require_ready: true });
      this.dialog.close();
      this.setModes(modes);
      this.onChanged?.(modes);
    } catch (error) {
      ok.disabled = false;
      body.append(el('p.bad.mode-error', {}, `Not changed: ${error.message}${error.status ? ` (${error.status})` : ''}`));
      const again = await new Promise((resolve) => {
        ok.addEventListener('click', () => resolve(true), { once: true });
        cancel.addEventListener('click', () => resolve(false), { once: true });
      });
      if (again) { this.dialog.close(); this.confirm(ns, mode); } else this.dialog.close();
    }
  }
}

function impactView(mode, impact) {
  if (mode === 'observe') return el('p.ok', {}, 'Nothing will be dropped or reported as would-drop.');
  if (impact.status !== 'fulfilled') return el('p.warn', {}, `Impact unknown: ${impact.reason.message}`);
  const i = impact.value;
  const verb = mode === 'enforce' ? 'would be dropped' : 'would be reported as would-drop';
  const denied = i.denied || [];
  return el('div.impact', {},
    el(i.flows_denied ? 'p.bad' : 'p.ok', { 'data-denied': i.flows_denied },
      `${fmtCount(i.flows_denied)} of ${fmtCount(i.flows_total)} flows of the last hour ${verb} by the policies in force.`),
    denied.length ? el('ul', {}, denied.slice(0, 10).map((d) => el('li.mono', {},
      `${d.source} → ${d.target} ${d.port !== undefined ? portLabel(d) : ''}${d.reason ? ` (${d.reason})` : ''}`))) : null);
}

function readinessView(r) {
  if (!r) return el('p.hint', {}, 'No readiness data for this namespace.');
  const pct = r.coverage !== undefined ? `${Math.round(r.coverage * 100)}%` : '–';
  return el('div', {},
    el(r.ready ? 'p.ok' : 'p.warn', {}, r.ready ? 'Ready: the suggestion covers recent traffic and no new edge appeared lately.' : 'Not ready yet: keep observing before enforcing.'),
    el('p', {}, `${fmtCount(r.edges)} edges; ${pct} of recent connections covered; last new edge ${r.seconds_since_last_new_edge ?? '–'} s ago.`));
}

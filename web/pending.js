// The would-have-dropped queue (/api/pending): every edge audit marked or
// enforce dropped that the enforced policies still deny, with the policies
// that isolate it and the rule that would allow it. Approve shows the diff
// of the enforced policies first (/api/pending/preview) and writes only
// once confirmed; reject keeps the edge denied and out of the queue.

import * as api from './client.js';
import { el, fill, fmtAgo, fmtCount, openDialog } from './dom.js';

export class Pending {
  constructor(root, { onCount } = {}) {
    this.root = root;
    this.onCount = onCount;
    this.token = 0;
    this.status = el('span.hint');
    this.list = el('div');
    fill(root,
      el('p.hint', {}, 'Connections audit marked or enforce dropped that the enforced policies still deny. '
        + 'Approve enforces the smallest rule that allows one (the diff comes first); reject keeps it denied '
        + 'and out of this list until it is seen again after the agent\'s reject window.'),
      el('div.toolrow', {}, el('button#pending-refresh', { type: 'button', onclick: () => this.load() }, 'Refresh'), this.status),
      this.list);
  }

  async load() {
    const token = ++this.token;
    try {
      const queue = await api.get('/api/pending');
      if (token !== this.token) return;
      this.render(queue.entries || []);
    } catch (error) {
      if (token !== this.token) return;
      fill(this.list, el('p.bad', {}, `Cannot load the queue: ${error.message}`));
    }
  }

  render(entries) {
    this.onCount?.(entries.length);
    if (!entries.length) {
      fill(this.list, el('p.ok.pending-empty', {}, 'Nothing pending: no connection the enforced policies deny.'));
      return;
    }
    fill(this.list, entries.map((e) => el('div.pending-row', { 'data-id': e.id },
      el('div', {}, el('span.mono', {}, e.id)),
      el('div.hint', {},
        `${e.namespaces.join(', ')} · `,
        e.dropped ? `${fmtCount(e.dropped)} dropped ` : '',
        e.audit ? `${fmtCount(e.audit)} would-drop ` : '',
        '· last ', fmtAgo(e.last_seen)),
      el('ul', {}, e.denied.map((d) => el('li', {},
        `${d.direction} of ${d.namespace}: ${d.reason}, isolated by `,
        el('span.mono', {}, d.isolated_by.join(', '))))),
      e.no_rule
        ? el('p.warn', {}, `No rule can allow it: ${e.no_rule}`)
        : el('details', {}, el('summary', {}, `Allowed by ${e.policies.join(', ')}`), el('pre.yaml', {}, e.rule)),
      el('div.toolrow', {},
        el('button.approve.primary', { type: 'button', disabled: Boolean(e.no_rule), onclick: () => this.approve(e) }, 'Approve…'),
        el('button.reject', { type: 'button', onclick: () => this.reject(e) }, 'Reject…')))));
  }

  /** The preview's diff in the dialog, then the approval once confirmed. */
  async approve(entry) {
    const { body, ok, answer } = openDialog(`Approve ${entry.id}?`, 'Approve and enforce');
    fill(body, el('p.hint', {}, 'Computing what would be written…'));
    try {
      const preview = await api.get('/api/pending/preview', { edges: entry.id });
      fill(body,
        el('p', {}, `Adds ${preview.policies.join(', ')} to the enforced policies. Nothing is written before you confirm.`),
        renderDiff(preview.diff));
      ok.disabled = false;
    } catch (error) {
      fill(body, el('p.bad.pending-error', {}, `No preview: ${error.message}${error.status ? ` (${error.status})` : ''}`));
    }
    if (!(await answer)) return;
    await this.decide('approve', entry, 'Approved');
  }

  async reject(entry) {
    const { body, ok, answer } = openDialog(`Reject ${entry.id}?`, 'Reject');
    fill(body, el('p', {}, 'It stays denied, and out of this list until it is seen again after the reject window.'));
    ok.disabled = false;
    if (!(await answer)) return;
    await this.decide('reject', entry, 'Rejected');
  }

  async decide(what, entry, done) {
    try {
      await api.write('POST', `/api/pending/${what}`, { edges: [entry.id] });
      this.flash(`${done} ${entry.id}`);
    } catch (error) {
      this.flash(`Not ${done.toLowerCase()}: ${error.message}${error.status ? ` (${error.status})` : ''}`, 10000);
    }
    await this.load();
  }

  flash(text, ms = 4000) {
    this.status.textContent = text;
    setTimeout(() => { if (this.status.textContent === text) this.status.textContent = ''; }, ms);
  }
}

function renderDiff(text) {
  return el('pre.diff', {}, text.split('\n').map((line) => {
    const cls = line.startsWith('+') && !line.startsWith('+++') ? '.add' : line.startsWith('-') && !line.startsWith('---') ? '.del' : '';
    return el(`span${cls}`, {}, `${line}\n`);
  }));
}

// The suggested policies panel: per namespace and per workload YAML, copy,
// download (one multi-document file, byte-identical to `weir export`), the
// diff against what is enforced now, and the verify report.

import * as api from './client.js';
import { el, fill, fmtCount, openDialog, portLabel } from './dom.js';

export class Policies {
  constructor(root) {
    this.root = root;
    this.namespaces = [];
    this.selected = '';
    this.yaml = '';
    this.token = 0;
    this.select = el('select#policies-ns', { 'aria-label': 'Namespace', onchange: () => { this.selected = this.select.value; this.load(); } });
    this.copyButton = el('button#policies-copy', { type: 'button', onclick: () => this.copy(), disabled: true }, 'Copy');
    this.downloadButton = el('button#policies-download', { type: 'button', onclick: () => this.download(), disabled: true }, 'Download .yaml');
    this.applyButton = el('button#policies-apply', { type: 'button', onclick: () => this.apply(), disabled: true,
      title: 'Make this suggestion the enforced set of its namespaces (modes stay as they are)' }, 'Apply to enforced');
    this.status = el('span.hint');
    this.body = el('div');
    fill(root,
      el('div.toolrow', {}, el('label', {}, 'Namespace ', this.select), this.copyButton, this.downloadButton, this.applyButton, this.status),
      this.body);
    this.renderOptions();
  }

  setNamespaces(names) {
    const sorted = [...new Set(names)].sort();
    if (sorted.join(',') === this.namespaces.join(',')) return;
    this.namespaces = sorted;
    this.renderOptions();
  }

  renderOptions() {
    fill(this.select, el('option', { value: '' }, 'all namespaces'),
      this.namespaces.map((ns) => el('option', { value: ns, selected: ns === this.selected }, ns)));
  }

  filename() {
    return this.selected ? `weir-policies-${this.selected}.yaml` : 'weir-policies.yaml';
  }

  async load() {
    const token = ++this.token;
    const params = { namespace: this.selected, format: 'json' };
    fill(this.body, el('p.hint', {}, 'Loading the suggestion…'));
    const [suggestion, diff, verify] = await Promise.allSettled([
      api.get('/api/policies', params),
      // The diff is per namespace.
      this.selected ? api.get('/api/policies/diff', { namespace: this.selected }) : Promise.resolve(null),
      api.get('/api/verify/suggestion', { namespace: this.selected }),
    ]);
    if (token !== this.token) return;
    const parts = [];
    if (suggestion.status === 'fulfilled') {
      const data = suggestion.value;
      this.yaml = data.yaml ?? data.all ?? '';
      this.copyButton.disabled = this.downloadButton.disabled = this.applyButton.disabled = !this.yaml;
      this.suggested = [...new Set(listPolicies(data).map((p) => p.namespace))];
      parts.push(this.renderSuggestion(data));
    } else {
      this.yaml = '';
      this.copyButton.disabled = this.downloadButton.disabled = this.applyButton.disabled = true;
      parts.push(el('p.bad', {}, `Cannot load the suggestion: ${suggestion.reason.message}`));
    }
    parts.push(el('h3', {}, 'Diff against enforced'));
    if (diff.status === 'rejected') parts.push(el('p.warn', {}, `No diff: ${diff.reason.message}`));
    else if (diff.value === null) parts.push(el('p.hint', {}, 'Choose a namespace to compare its suggestion with what is enforced there.'));
    else parts.push(renderDiff(diff.value));
    parts.push(el('h3', {}, 'Verify report'));
    parts.push(verify.status === 'fulfilled' ? renderVerify(verify.value) : el('p.warn', {}, `No report: ${verify.reason.message}`));
    fill(this.body, parts);
  }

  renderSuggestion(data) {
    const items = listPolicies(data);
    if (!items.length) return el('p.hint', {}, 'No suggestion yet: nothing observed in this selection.');
    const byNs = new Map();
    for (const item of items) {
      if (!byNs.has(item.namespace)) byNs.set(item.namespace, []);
      byNs.get(item.namespace).push(item);
    }
    return el('div.suggestion', {},
      el('p', {}, `${items.length} polic${items.length === 1 ? 'y' : 'ies'} in ${byNs.size} namespace${byNs.size === 1 ? '' : 's'}.`),
      [...byNs.entries()].map(([ns, list]) => el('details', { open: byNs.size === 1 },
        el('summary', {}, el('strong', {}, ns), ` — ${list.length} polic${list.length === 1 ? 'y' : 'ies'}`),
        list.map((p) => el('details.policy', { 'data-policy': `${p.namespace}/${p.name}` },
          el('summary', {}, el('span.mono', {}, p.name), p.workload ? el('span.hint', {}, `  workload ${p.workload}`) : null),
          el('pre.yaml', {}, p.yaml))))),
      (data.warnings || []).map((w) => el('p.warn', {}, w)));
  }

  async copy() {
    try {
      await navigator.clipboard.writeText(this.yaml);
      this.flash('Copied');
    } catch {
      // No clipboard API off localhost/HTTPS: select the text instead.
      const area = el('textarea', { readonly: true });
      area.value = this.yaml;
      document.body.append(area);
      area.select();
      const ok = document.execCommand('copy');
      area.remove();
      this.flash(ok ? 'Copied' : 'Copy failed: select the YAML by hand');
    }
  }

  download() {
    const blob = new Blob([this.yaml], { type: 'application/yaml' });
    const url = URL.createObjectURL(blob);
    const link = el('a', { href: url, download: this.filename() });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    this.flash(`Saved ${this.filename()}`);
  }

  /** POST the suggestion as the enforced set of its namespaces, after a confirmation. */
  async apply() {
    const namespaces = this.selected ? [this.selected] : this.suggested || [];
    const ok = await confirmDialog(`Apply the suggestion to ${namespaces.join(', ')}?`,
      [el('p', {}, 'These policies replace the enforced policies of those namespaces. Modes stay as they are: '
        + 'in observe nothing is dropped until you switch a namespace to audit or enforce.')],
      'Apply');
    if (!ok) return;
    try {
      const query = new URLSearchParams({ replace: namespaces.join(',') });
      const applied = await api.write('POST', `/api/policies/enforced?${query}`, undefined,
        { raw: this.yaml, contentType: 'application/yaml' });
      this.flash(`Applied ${applied?.applied?.length ?? ''} policies`);
      this.load();
    } catch (error) {
      this.flash(`Not applied: ${error.message}${error.status ? ` (${error.status})` : ''}`, 10000);
    }
  }

  flash(text, ms = 3000) {
    this.status.textContent = text;
    setTimeout(() => { if (this.status.textContent === text) this.status.textContent = ''; }, ms);
  }
}

/** A yes/no question in the confirmation dialog. */
function confirmDialog(title, body, okLabel) {
  const dialog = openDialog(title, okLabel);
  fill(dialog.body, body);
  dialog.ok.disabled = false;
  return dialog.answer;
}

/** [{namespace, name, workload, yaml}] from either answer shape. */
function listPolicies(data) {
  if (Array.isArray(data.policies)) return data.policies;
  // Older shape: a YAML file per namespace.
  return Object.entries(data.files || {}).map(([ns, yaml]) => ({ namespace: ns, name: `${ns}.yaml`, yaml }));
}

const count = (v) => (Array.isArray(v) ? v.length : Number(v || 0));

function renderDiff(d) {
  const summary = el('p', {}, `${count(d.added)} added, ${count(d.removed)} removed, ${count(d.changed)} changed, ${count(d.unchanged)} unchanged`);
  const text = typeof d.diff === 'string' ? d.diff : '';
  if (!text) return [summary, el('p.hint', {}, 'The suggestion matches what is enforced.')];
  return [summary, el('pre.diff', {}, text.split('\n').map((line) => {
    const cls = line.startsWith('+') && !line.startsWith('+++') ? '.add' : line.startsWith('-') && !line.startsWith('---') ? '.del' : '';
    return el(`span${cls}`, {}, `${line}\n`);
  }))];
}

function renderVerify(r) {
  const denied = r.denied || [];
  const extra = r.unobserved_allowed || [];
  const row = (f) => el('li.mono', {}, `${f.source} → ${f.target} ${portLabel(f)}`);
  return el('div.verify', {},
    el('p', {}, `${fmtCount(r.observed)} observed flows, ${fmtCount(r.workloads)} workloads, ${fmtCount(r.ports)} ports checked.`),
    el(denied.length ? 'p.bad' : 'p.ok', {}, denied.length ? `${denied.length} observed flow(s) would be denied` : 'Every observed flow is allowed.'),
    denied.length ? el('ul', {}, denied.slice(0, 50).map(row)) : null,
    el(extra.length ? 'p.warn' : 'p.ok', {}, extra.length ? `${extra.length} never-observed pair(s) allowed` : 'Nothing unobserved is allowed.'),
    extra.length ? el('ul', {}, extra.slice(0, 50).map(row)) : null);
}

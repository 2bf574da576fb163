// Coverage: through `weir relay`, every answer says how many nodes' agents
// the merged view holds (`coverage`: expected, synced, stale nodes, each
// node's state). The badge says it in one line and turns amber when a node
// is missing; its list marks each stale node. An agent's answers have no
// coverage: then nothing is shown.

import { el, fill, fmtAgo } from './dom.js';

/** "2 of 3 nodes; stale: b", or null without coverage. */
export function coverageText(coverage) {
  if (!coverage || typeof coverage.expected !== 'number') return null;
  let text = `${coverage.synced} of ${coverage.expected} node${coverage.expected === 1 ? '' : 's'}`;
  const stale = coverage.stale || [];
  if (stale.length) text += `; stale: ${stale.join(', ')}`;
  return text;
}

/** The whole cluster is in the view. */
export function isComplete(coverage) {
  return coverage.synced >= coverage.expected && !(coverage.stale || []).length;
}

export class Coverage {
  constructor(wrap, button, list) {
    this.wrap = wrap;
    this.button = button;
    this.list = list;
    this.button.addEventListener('click', (event) => {
      event.stopPropagation();
      this.list.classList.toggle('hidden');
    });
    document.addEventListener('click', (event) => {
      if (!this.list.contains(event.target)) this.list.classList.add('hidden');
    });
  }

  /** Show an answer's `coverage` (hide the badge when it has none). */
  show(coverage) {
    const text = coverageText(coverage);
    this.wrap.classList.toggle('hidden', text === null);
    if (text === null) return;
    const complete = isComplete(coverage);
    this.button.textContent = text;
    this.button.className = `coverage ${complete ? 'complete' : 'partial'}`;
    this.button.title = complete
      ? 'Every node\'s agent is in this view'
      : 'Some nodes\' agents are missing from this view: their pods\' traffic and the allow rules it needs may be missing';
    const stale = new Set(coverage.stale || []);
    const nodes = [...(coverage.nodes || [])].sort((a, b) => a.node.localeCompare(b.node));
    fill(this.list, nodes.map((n) => {
      const state = stale.has(n.node) ? 'stale' : n.state;
      return el(`div.cov-node.${state}`, { role: 'listitem', dataset: { node: n.node, state } },
        el('span.cov-name', {}, n.node),
        el('span.cov-state', {}, state),
        el('span.cov-sync', {}, n.last_sync ? ['synced ', fmtAgo(n.last_sync)] : 'never synced'),
        n.error ? el('div.cov-error', {}, n.error) : null);
    }));
  }
}

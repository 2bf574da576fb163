// The filter bar: namespace, protocol, port, verdict, time window. The
// same filter goes to the API as query parameters and is applied here too,
// so the view is right whichever side filtered.

import { el, fill, durationMs } from './dom.js';

export class Filters {
  constructor(onChange) {
    this.onChange = onChange;
    this.namespaces = new Set(); // selected; empty: all
    this.known = [];
    this.protocol = document.getElementById('f-protocol');
    this.port = document.getElementById('f-port');
    this.verdict = document.getElementById('f-verdict');
    this.since = document.getElementById('f-since');
    this.nsButton = document.getElementById('f-namespace-btn');
    this.nsPopover = document.getElementById('f-namespace');
    for (const input of [this.protocol, this.verdict, this.since]) {
      input.addEventListener('change', () => this.onChange());
    }
    this.port.addEventListener('change', () => this.onChange());
    this.nsButton.addEventListener('click', (event) => {
      event.stopPropagation();
      this.nsPopover.classList.toggle('hidden');
    });
    document.addEventListener('click', (event) => {
      if (!this.nsPopover.contains(event.target)) this.nsPopover.classList.add('hidden');
    });
  }

  /** The namespaces to offer (from the unfiltered graph and the modes). */
  setKnownNamespaces(names) {
    const sorted = [...new Set(names)].sort();
    if (sorted.join(',') === this.known.join(',')) return;
    this.known = sorted;
    fill(this.nsPopover, sorted.map((ns) => el('label', {},
      el('input', {
        type: 'checkbox',
        value: ns,
        checked: this.namespaces.has(ns),
        onchange: (event) => {
          if (event.target.checked) this.namespaces.add(ns);
          else this.namespaces.delete(ns);
          this.renderButton();
          this.onChange();
        },
      }),
      ns)));
    this.renderButton();
  }

  renderButton() {
    const n = this.namespaces.size;
    this.nsButton.textContent = n === 0 ? 'all' : n === 1 ? [...this.namespaces][0] : `${n} selected`;
  }

  value() {
    const port = this.port.value.trim();
    return {
      namespaces: [...this.namespaces].sort(),
      protocol: this.protocol.value,
      port: /^\d+$/.test(port) ? Number(port) : null,
      verdict: this.verdict.value,
      since: this.since.value,
    };
  }

  /** Query parameters of `/api/graph` for the current filter. */
  query() {
    const f = this.value();
    return {
      namespace: f.namespaces.join(','),
      protocol: f.protocol,
      port: f.port ?? '',
      verdict: f.verdict,
      since: f.since,
    };
  }
}

/** `graph` reduced to what `filter` lets through. */
export function applyFilter(graph, filter, now = Date.now()) {
  const window = durationMs(filter.since);
  const edgeFilter = Boolean(filter.protocol || filter.port !== null || filter.verdict || window);
  const nsSet = new Set(filter.namespaces);
  const groupOf = new Map(graph.nodes.map((n) => [n.id, n.group || n.namespace || 'external']));
  const inNs = (id) => nsSet.size === 0 || nsSet.has(groupOf.get(id));
  const edges = [];
  for (const edge of graph.edges) {
    if (!inNs(edge.source) && !inNs(edge.target)) continue;
    if (window && Date.parse(edge.last_seen) < now - window) continue;
    let ports = edge.ports || [];
    if (filter.protocol) ports = ports.filter((p) => p.protocol === filter.protocol);
    if (filter.port !== null) ports = ports.filter((p) => p.port === filter.port);
    if (filter.verdict) {
      ports = ports.filter((p) => (p.verdicts ? (p.verdicts[filter.verdict] || 0) > 0 : (edge.verdict || 'forwarded') === filter.verdict));
    }
    if (!ports.length && (edge.ports || []).length) continue;
    edges.push(ports === edge.ports ? edge : { ...edge, ports });
  }
  const touched = new Set(edges.flatMap((e) => [e.source, e.target]));
  const nodes = graph.nodes.filter((n) => touched.has(n.id) || (!edgeFilter && inNs(n.id)));
  return { ...graph, nodes, edges };
}

// The details panel of the selected node or edge: /api/node and /api/edge,
// falling back to what the graph already says when those cannot answer.

import * as api from './client.js';
import { el, fill, kv, chips, fmtCount, fmtBytes, fmtAgo, verdictBadge, portLabel, externalLabel } from './dom.js';

export class Details {
  constructor(root, { graphLookup }) {
    this.root = root;
    this.graphLookup = graphLookup; // (kind, id) -> the graph's JSON for it
    this.current = null;
    this.token = 0;
  }

  clear() {
    this.current = null;
    fill(this.root, el('p.hint', {}, 'Click a workload or an edge to see its pods, ports, counters and the policy rule that allows or denies it.'));
  }

  async show(selection) {
    if (!selection) { this.clear(); return; }
    this.current = selection;
    const token = ++this.token;
    const local = this.graphLookup(selection.kind, selection.id);
    fill(this.root, el('p.hint', {}, 'Loading…'));
    let remote = null;
    let problem = null;
    // A DNS name's node (and its edges) stands for several addresses: the
    // graph's JSON says all there is of it.
    const isName = (id) => Boolean(this.graphLookup('node', id)?.addresses?.length);
    const byName = selection.kind === 'edge'
      ? isName(local?.source ?? selection.data.source) || isName(local?.target ?? selection.data.target)
      : Boolean(local?.addresses?.length);
    try {
      if (!byName) {
        remote = selection.kind === 'edge'
          ? await api.get('/api/edge', { source: local?.source ?? selection.data.source, target: local?.target ?? selection.data.target })
          : await api.get('/api/node', { id: selection.id });
      }
    } catch (error) {
      problem = error;
    }
    if (token !== this.token) return; // another selection came since
    const data = { ...(local || {}), ...(remote || {}) };
    const body = selection.kind === 'edge' ? this.edge(data) : this.node(data);
    fill(this.root, problem ? el('p.warn', {}, `Showing the graph's summary: ${problem.message}`) : null, body);
  }

  /** Refresh what is shown (after a graph update), quietly. */
  refresh() {
    if (this.current) this.show(this.current);
  }

  node(n) {
    const pods = n.pods || [];
    const podRows = pods.map((p) => (typeof p === 'string' ? { name: p } : p));
    return el('div.details', { 'data-kind': 'node', 'data-id': n.id },
      el('h2', {}, n.kind === 'external' ? externalLabel(n) : `${n.namespace ?? n.group}/${n.workload ?? n.name}`),
      kv([
        ['Kind', n.kind],
        n.namespace ? ['Namespace', n.namespace] : null,
        n.mode ? ['Mode', el(`span.badge.${n.mode}`, {}, n.mode)] : null,
        ['Edges', `${n.edges_in?.length ?? n.edges_in ?? '–'} in, ${n.edges_out?.length ?? n.edges_out ?? '–'} out`],
      ]),
      n.addresses?.length ? [el('h3', {}, `Addresses (${n.addresses.length})`),
        el('table.addresses', {}, el('tr', {}, el('th', {}, 'Address'), el('th', {}, 'First seen'), el('th', {}, 'Last seen')),
          n.addresses.map((a) => el('tr', {}, el('td.mono', {}, a.address), el('td', {}, fmtAgo(a.first_seen)), el('td', {}, fmtAgo(a.last_seen)))))] : null,
      el('h3', {}, 'Labels'),
      chips(n.labels),
      el('h3', {}, `Pods (${podRows.length})`),
      podRows.length
        ? el('table', {}, el('tr', {}, el('th', {}, 'Pod'), el('th', {}, 'IPs')),
          podRows.map((p) => el('tr', {}, el('td.mono', {}, p.name), el('td.mono', {}, (p.ips || []).join(', ')))))
        : el('p.hint', {}, n.addresses?.length ? 'A DNS name outside the cluster: the addresses its answers gave pods, each drawn here as one node.'
          : n.kind === 'external' ? 'An address outside the cluster.' : 'No pod seen.'),
      n.ports_served ? [el('h3', {}, 'Ports served'),
        el('div', {}, (n.ports_served || []).map((p) => el('span.chip', {}, typeof p === 'object' ? portLabel(p) : String(p))))] : null,
      this.edgeList('Incoming', n.edges_in),
      this.edgeList('Outgoing', n.edges_out));
  }

  edgeList(title, edges) {
    if (!Array.isArray(edges) || !edges.length) return null;
    return [el('h3', {}, title),
      el('ul', {}, edges.map((e) => el('li', {},
        el('span.mono', {}, typeof e === 'string' ? e : (e.peer || e.id || `${e.source}->${e.target}`)),
        typeof e === 'object' && e.ports ? el('span.mono', {}, ` ${e.ports.map(portLabel).join(', ')} `) : null,
        typeof e === 'object' && e.verdict ? verdictBadge(e.verdict) : null)))];
  }

  edge(e) {
    const ports = e.ports || [];
    return el('div.details', { 'data-kind': 'edge', 'data-id': e.id || `${e.source}->${e.target}` },
      el('h2', {}, el('span.mono', {}, e.source), ' → ', el('span.mono', {}, e.target)),
      kv([
        ['Verdict', verdictBadge(e.verdict)],
        ['Connections', fmtCount(e.connections)],
        ['Packets', fmtCount(e.packets)],
        ['Bytes', fmtBytes(e.bytes)],
        ['First seen', fmtAgo(e.first_seen)],
        ['Last seen', fmtAgo(e.last_seen)],
      ]),
      el('h3', {}, `Ports (${ports.length})`),
      el('table.ports', {},
        el('tr', {}, el('th', {}, 'Port'), el('th.num', {}, 'Conns'), el('th.num', {}, 'Packets'),
          el('th.num', {}, 'Bytes'), el('th', {}, 'Last seen'), el('th', {}, 'Verdicts')),
        ports.map((p) => el('tr', { 'data-port': portLabel(p) },
          el('td.mono', {}, portLabel(p)),
          el('td.num', {}, fmtCount(p.connections)),
          el('td.num', {}, fmtCount(p.packets)),
          el('td.num', {}, fmtBytes(p.bytes)),
          el('td', {}, fmtAgo(p.last_seen)),
          el('td', {}, verdictCounts(p.verdicts))))),
      this.policy(e.policy),
      this.pods('Source pods', e.source_pods),
      this.pods('Target pods', e.target_pods),
      this.flows(e.recent_flows));
  }

  policy(rules) {
    if (!Array.isArray(rules)) return null;
    return [el('h3', {}, 'Policy'),
      rules.length ? rules.map((r) => el('div.rule', {},
        el('div', {}, el('strong.mono', {}, portLabel(r)), ' ', el(`span.badge.${r.verdict}`, {}, r.verdict)),
        direction('egress', r.egress),
        direction('ingress', r.ingress)))
        : el('p.hint', {}, 'No policy applies: allowed because nothing isolates these workloads.')];
  }

  pods(title, pods) {
    if (!Array.isArray(pods) || !pods.length) return null;
    return [el('h3', {}, title), el('div', {}, pods.map((p) => el('span.chip', {}, typeof p === 'string' ? p : p.name)))];
  }

  flows(flows) {
    if (!Array.isArray(flows) || !flows.length) return null;
    return [el('h3', {}, `Recent flows (${flows.length})`),
      el('table', {}, el('tr', {}, el('th', {}, 'Time'), el('th', {}, 'Source'), el('th', {}, 'Destination'), el('th', {}, 'Verdict')),
        flows.slice(0, 20).map((f) => el('tr', {},
          el('td', {}, fmtAgo(f.time)),
          el('td.mono', {}, endpoint(f.source, f.IP?.source)),
          el('td.mono', {}, `${endpoint(f.destination, f.IP?.destination)}:${flowPort(f)}`),
          el('td', {}, f.verdict || '')))),
    ];
  }
}

function endpoint(ep, ip) {
  if (ep && ep.pod_name) return `${ep.namespace}/${ep.pod_name}`;
  return ip || '?';
}

function flowPort(f) {
  const l4 = f.l4 || {};
  const t = l4.TCP || l4.UDP || l4.SCTP;
  return t ? t.destination_port : '';
}

function verdictCounts(verdicts) {
  if (!verdicts) return '';
  return Object.entries(verdicts).filter(([, n]) => n > 0)
    .map(([v, n]) => el('span', {}, verdictBadge(v), ` ${fmtCount(n)} `));
}

function direction(name, d) {
  if (!d) return null;
  let text;
  switch (d.verdict) {
    case 'allowed':
      text = `allowed by ${(d.rules?.length ? d.rules : d.allowed_by || []).join(', ')}`;
      break;
    case 'denied':
      text = `denied: ${d.reason || 'no rule matches'}${d.isolated_by?.length ? ` (isolated by ${d.isolated_by.join(', ')})` : ''}`;
      break;
    case 'not-isolated':
      text = 'allowed: no policy selects this end';
      break;
    case 'not-applicable':
      text = 'outside the cluster';
      break;
    default:
      text = d.verdict || JSON.stringify(d);
  }
  const effect = d.mode ? el('span.hint', {}, ` · ${d.mode}${d.effect && d.effect !== 'forwarded' ? ` → ${d.effect}` : ''}`) : null;
  return el(`div.dir-${d.verdict || 'unknown'}`, {}, el('span.dir', {}, name), el('span.mono', {}, text), effect);
}

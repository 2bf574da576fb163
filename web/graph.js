// The flow graph view: cytoscape.js with namespaces as compound boxes.
// Updates are incremental (one cy.batch of adds, removals and data
// changes): positions, zoom, pan and selection stay. While the user has not
// touched the view, a new node triggers a full layout in a Web Worker and a
// fit; afterwards new nodes are placed next to their group, nothing moves,
// and "Tidy layout" lays everything out again on request.

import cytoscape from './cytoscape.esm.min.mjs';
import { layout as layoutSync, placeNew, COL_W, ROW_H } from './layout.js';
import { portLabel, externalLabel } from './dom.js';

const COLORS = { forwarded: '#2f9e6e', audit: '#e39a16', dropped: '#d64545' };
const GROUP_PREFIX = 'group:';

// Past this many edges the drawing switches to its cheap form: straight
// solid lines without arrows or labels (the selected edge keeps its label),
// and pan/zoom move a cached texture. Dashes and curves cost most when
// thousands of edges are drawn on a CPU.
const LARGE = 1500;

function largeStyles() {
  return [
    {
      selector: 'edge',
      style: {
        'curve-style': 'haystack',
        'haystack-radius': 0,
        'target-arrow-shape': 'none',
        'line-style': 'solid',
        label: '',
        opacity: 0.55,
      },
    },
    { selector: 'edge:selected', style: { label: 'data(label)', opacity: 1 } },
    { selector: '.faded', style: { opacity: 0.08 } },
  ];
}

function styles(large = false) {
  return [
    {
      selector: 'node',
      style: {
        shape: 'round-rectangle',
        width: 'data(w)',
        height: 30,
        label: 'data(label)',
        'text-valign': 'center',
        'text-halign': 'center',
        'font-size': 12,
        'font-family': 'system-ui, "DejaVu Sans", sans-serif',
        color: '#1d2733',
        'background-color': '#ffffff',
        'border-width': 1.5,
        'border-color': '#5b6b80',
        'min-zoomed-font-size': 6,
      },
    },
    {
      selector: 'node[kind = "external"]',
      style: { 'border-style': 'dashed', 'background-color': '#f3f0fa', 'border-color': '#7a6a9a' },
    },
    {
      selector: ':parent',
      style: {
        shape: 'round-rectangle',
        'background-color': '#eef3f8',
        'background-opacity': 1,
        'border-width': 1.5,
        'border-color': '#aebfd3',
        label: 'data(label)',
        'text-valign': 'top',
        'text-halign': 'center',
        'text-margin-y': -4,
        'font-size': 13,
        'font-weight': 'bold',
        color: '#2c4461',
        padding: 16,
        'min-zoomed-font-size': 5,
      },
    },
    { selector: ':parent[mode = "audit"]', style: { 'border-color': '#e39a16', 'border-width': 2.5 } },
    { selector: ':parent[mode = "enforce"]', style: { 'border-color': '#1f3a5f', 'border-width': 2.5 } },
    {
      selector: ':parent[kind = "external"]',
      style: { 'background-color': '#f7f5fb', 'border-style': 'dashed', 'border-color': '#b3a6cc', color: '#5b4a7d' },
    },
    {
      selector: 'edge',
      style: {
        width: 'data(w)',
        'curve-style': 'bezier',
        'line-color': 'data(color)',
        'target-arrow-color': 'data(color)',
        'target-arrow-shape': 'triangle',
        'arrow-scale': 0.9,
        label: 'data(label)',
        'font-size': 10,
        'font-family': 'ui-monospace, "DejaVu Sans Mono", monospace',
        color: '#34414f',
        'text-background-color': '#ffffff',
        'text-background-opacity': 0.9,
        'text-background-padding': 2,
        'text-background-shape': 'round-rectangle',
        'text-events': 'yes',
        'min-zoomed-font-size': 7,
      },
    },
    // An edge that skips columns along one row would run under the nodes
    // between its ends: it bows instead.
    {
      selector: 'edge.arc',
      style: { 'curve-style': 'unbundled-bezier', 'control-point-distances': [-70], 'control-point-weights': [0.5] },
    },
    { selector: 'edge[verdict = "audit"]', style: { 'line-style': 'dashed' } },
    { selector: 'edge[verdict = "dropped"]', style: { 'line-style': 'dashed', 'line-dash-pattern': [4, 3] } },
    {
      selector: 'node:selected',
      style: { 'border-color': '#1f6fd1', 'border-width': 3, 'background-color': '#e8f1fd' },
    },
    {
      selector: 'edge:selected',
      style: { width: 4, 'overlay-color': '#1f6fd1', 'overlay-opacity': 0.15, 'overlay-padding': 5, 'z-index': 10 },
    },
    { selector: '.faded', style: { opacity: 0.18 } },
    {
      selector: 'node.match',
      style: { 'border-color': '#f0a500', 'border-width': 3.5, 'background-color': '#fff6dc' },
    },
    ...(large ? largeStyles() : []),
  ];
}

function nodeData(n, modes) {
  const group = n.group || n.namespace || 'external';
  const label = n.kind === 'external' ? externalLabel(n) : (n.name || n.workload || n.id);
  return {
    id: n.id,
    parent: GROUP_PREFIX + group,
    label,
    kind: n.kind || 'workload',
    group,
    w: Math.max(70, Math.min(240, label.length * 7 + 26)),
    search: [n.id, label, ...(n.addresses || []).map((a) => a.address),
      ...Object.entries(n.labels || {}).map(([k, v]) => `${k}=${v}`)].join(' ').toLowerCase(),
    mode: modes?.[group],
  };
}

function groupData(group, kind, mode) {
  const shown = mode && mode !== 'observe' ? `${group} · ${mode}` : group;
  return { id: GROUP_PREFIX + group, label: shown, kind, group, mode: mode || 'observe', w: 10 };
}

function edgeData(e) {
  const ports = e.ports || [];
  const shown = ports.slice(0, 2).map(portLabel);
  if (ports.length > 2) shown.push(`+${ports.length - 2}`);
  const verdict = e.verdict || 'forwarded';
  return {
    id: e.id || `${e.source}->${e.target}`,
    source: e.source,
    target: e.target,
    verdict,
    color: COLORS[verdict] || COLORS.forwarded,
    label: shown.join(', '),
    w: 1.4 + Math.min(2.2, Math.log10((e.connections || 0) + 1) * 0.7),
  };
}

const same = (a, b) => Object.keys(b).every((k) => a[k] === b[k]);

export class GraphView {
  constructor(container, { onSelect, onLayout } = {}) {
    this.container = container;
    this.onSelect = onSelect || (() => {});
    this.onLayout = onLayout || (() => {});
    this.pristine = true; // the user has not moved, zoomed or clicked yet
    this.seq = 0;
    this.queue = Promise.resolve();
    this.query = '';
    this.stats = { lastUpdateMs: 0, lastLayoutMs: 0 };
    this.cy = cytoscape({
      container,
      style: styles(),
      minZoom: 0.05,
      maxZoom: 3,
      boxSelectionEnabled: false,
      selectionType: 'single',
    });
    this.cy.on('tapstart grab', () => { this.pristine = false; });
    container.addEventListener('wheel', () => { this.pristine = false; }, { passive: true });
    this.cy.on('select', 'node, edge', (event) => {
      const ele = event.target;
      if (ele.isParent()) return;
      this.onSelect({ kind: ele.isEdge() ? 'edge' : 'node', id: ele.id(), data: ele.data() });
    });
    this.cy.on('unselect', () => {
      if (this.cy.$(':selected').empty()) this.onSelect(null);
    });
    this.worker = null;
    try {
      this.worker = new Worker(new URL('./layout-worker.js', import.meta.url), { type: 'module' });
    } catch {
      this.worker = null; // falls back to the same layout on this thread
    }
    this.pending = new Map();
    this.worker?.addEventListener('message', (event) => {
      const resolve = this.pending.get(event.data.seq);
      this.pending.delete(event.data.seq);
      resolve?.(event.data);
    });
  }

  /** Full layout positions of `nodes`/`edges`, computed in the worker. */
  computeLayout(nodes, edges) {
    const input = {
      nodes: nodes.map((n) => ({ id: n.id, group: n.group })),
      edges: edges.map((e) => ({ source: e.source, target: e.target })),
    };
    if (!this.worker) {
      const started = performance.now();
      return Promise.resolve({ positions: layoutSync(input.nodes, input.edges), ms: performance.now() - started });
    }
    this.seq += 1;
    const seq = this.seq;
    return new Promise((resolve) => {
      this.pending.set(seq, resolve);
      this.worker.postMessage({ seq, ...input });
    });
  }

  /** Show `graph` ({nodes, edges}, already filtered); serialised. */
  update(graph, modes) {
    this.queue = this.queue.then(() => this.apply(graph, modes)).catch((error) => {
      console.error('graph update failed', error);
    });
    return this.queue;
  }

  async apply(graph, modes) {
    const started = performance.now();
    const cy = this.cy;
    const nodes = graph.nodes.map((n) => nodeData(n, modes));
    const edges = graph.edges.map(edgeData);
    const nodeIds = new Set(nodes.map((n) => n.id));
    const keptEdges = edges.filter((e) => nodeIds.has(e.source) && nodeIds.has(e.target));
    const groups = new Map();
    for (const n of nodes) {
      if (!groups.has(n.group)) groups.set(n.group, groupData(n.group, n.kind === 'external' ? 'external' : 'namespace', modes?.[n.group]));
    }
    const added = nodes.filter((n) => cy.getElementById(n.id).empty());
    this.setLarge(keptEdges.length > LARGE);

    let positions = null;
    let relayout = false;
    if (added.length && this.pristine) {
      const result = await this.computeLayout(nodes, keptEdges);
      positions = result.positions;
      this.stats.lastLayoutMs = result.ms;
      relayout = true;
    } else if (added.length) {
      const current = {};
      cy.nodes().forEach((n) => { if (!n.isParent()) current[n.id()] = n.position(); });
      positions = placeNew(added, nodes, keptEdges, { ...current });
    }

    cy.batch(() => {
      const wantEdges = new Set(keptEdges.map((e) => e.id));
      cy.edges().forEach((e) => { if (!wantEdges.has(e.id())) e.remove(); });
      cy.nodes().forEach((n) => {
        if (!n.isParent() && !nodeIds.has(n.id())) n.remove();
      });
      cy.nodes().forEach((n) => {
        if (n.isParent() || n.id().startsWith(GROUP_PREFIX)) {
          if (!groups.has(n.data('group'))) n.remove();
        }
      });
      for (const g of groups.values()) {
        const existing = cy.getElementById(g.id);
        if (existing.empty()) cy.add({ group: 'nodes', data: g });
        else if (!same(existing.data(), g)) existing.data(g);
      }
      for (const n of nodes) {
        const existing = cy.getElementById(n.id);
        if (existing.empty()) {
          cy.add({ group: 'nodes', data: n, position: { ...(positions?.[n.id] || { x: 0, y: 0 }) } });
        } else {
          if (existing.data('parent') !== n.parent) existing.move({ parent: n.parent });
          const { parent, ...rest } = n;
          if (!same(existing.data(), rest)) existing.data(rest);
        }
      }
      for (const e of keptEdges) {
        const existing = cy.getElementById(e.id);
        if (existing.empty()) cy.add({ group: 'edges', data: e });
        else if (!same(existing.data(), e)) existing.data(e);
      }
      if (relayout) {
        cy.nodes().forEach((n) => {
          const p = positions[n.id()];
          if (p && !n.isParent()) n.position({ ...p });
        });
      }
    });
    this.markArcs();
    this.highlight(this.query, { focus: false });
    if (relayout) this.fit();
    this.stats.lastUpdateMs = performance.now() - started;
    // Drawn: the frame after the one that renders the change.
    requestAnimationFrame(() => requestAnimationFrame(() => {
      this.stats.lastPaintMs = performance.now() - started;
      this.stats.paintedAt = performance.now();
    }));
    this.onLayout(this.stats);
  }

  setLarge(large) {
    if (large === Boolean(this.large)) return;
    this.large = large;
    this.cy.style(styles(large));
    const renderer = this.cy.renderer();
    if (renderer) renderer.textureOnViewport = large;
  }

  fit() {
    const cy = this.cy;
    if (cy.elements().empty()) return;
    cy.fit(cy.elements(), 30);
    if (cy.zoom() > 1.5) cy.zoom({ level: 1.5, renderedPosition: { x: cy.width() / 2, y: cy.height() / 2 } });
    if (cy.zoom() <= 1.5) cy.center();
  }

  /** Class `arc` on edges whose straight line would cross another node. */
  markArcs() {
    if (this.large) return;
    const leaves = this.cy.nodes().filter((n) => !n.isParent()).map((n) => ({ id: n.id(), ...n.position() }));
    this.cy.batch(() => {
      this.cy.edges().forEach((edge) => {
        const a = edge.source().position();
        const b = edge.target().position();
        const ends = new Set([edge.source().id(), edge.target().id()]);
        const crosses = Math.abs(b.x - a.x) > COL_W && leaves.some((n) => {
          if (ends.has(n.id)) return false;
          const t = (n.x - a.x) / (b.x - a.x);
          if (!(t > 0 && t < 1)) return false;
          return Math.abs(a.y + t * (b.y - a.y) - n.y) < ROW_H / 2;
        });
        edge.toggleClass('arc', crosses);
      });
    });
  }

  /** Lay everything out again (the "Tidy layout" button). */
  async relayout() {
    const cy = this.cy;
    const nodes = cy.nodes().filter((n) => !n.isParent()).map((n) => ({ id: n.id(), group: n.data('group') }));
    const edges = cy.edges().map((e) => ({ source: e.data('source'), target: e.data('target') }));
    const { positions, ms } = await this.computeLayout(nodes, edges);
    this.stats.lastLayoutMs = ms;
    cy.batch(() => {
      cy.nodes().forEach((n) => { if (!n.isParent() && positions[n.id()]) n.position({ ...positions[n.id()] }); });
    });
    this.markArcs();
    this.fit();
  }

  /** Highlight nodes matching `query` (id, name, label); fade the rest. */
  highlight(query, { focus = true } = {}) {
    this.query = (query || '').trim().toLowerCase();
    const cy = this.cy;
    let matches = cy.collection();
    cy.batch(() => {
      cy.elements().removeClass('match faded');
      if (!this.query) return;
      matches = cy.nodes().filter((n) => !n.isParent() && (n.data('search') || '').includes(this.query));
      const keep = matches.union(matches.connectedEdges()).union(matches.connectedEdges().connectedNodes());
      const parents = keep.nodes().parents();
      cy.elements().difference(keep).difference(parents).addClass('faded');
      matches.addClass('match');
    });
    if (focus && !matches.empty()) {
      this.pristine = false;
      this.cy.animate({ fit: { eles: matches, padding: 80 }, duration: 250 });
    }
    return matches.length;
  }

  /** Select an element by id (tests and deep links). */
  select(id) {
    const ele = this.cy.getElementById(id);
    if (ele.empty()) return false;
    this.cy.$(':selected').unselect();
    ele.select();
    return true;
  }
}

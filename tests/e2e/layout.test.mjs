// The UI's pure modules, without a browser: the layout and the filter.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { layout, placeNew, ranks, COL_W, ROW_H } from '../../web/layout.js';
import { applyFilter } from '../../web/filters.js';
import { syntheticGraph } from './fixtures.mjs';

const e = (source, target) => ({ source, target });

test('ranks follow the traffic and survive cycles', () => {
  const r = ranks(['a', 'b', 'c', 'd'], [e('a', 'b'), e('b', 'c'), e('c', 'a'), e('a', 'd'), e('d', 'c')]);
  assert.equal(r.get('a'), 0);
  assert.ok(r.get('b') > r.get('a'));
  assert.ok(r.get('c') > r.get('d') && r.get('d') > r.get('a'));
});

function boxes(nodes, positions) {
  const out = new Map();
  for (const n of nodes) {
    const p = positions[n.id];
    const b = out.get(n.group) || { x0: Infinity, y0: Infinity, x1: -Infinity, y1: -Infinity };
    b.x0 = Math.min(b.x0, p.x - COL_W / 2); b.x1 = Math.max(b.x1, p.x + COL_W / 2);
    b.y0 = Math.min(b.y0, p.y - ROW_H / 2); b.y1 = Math.max(b.y1, p.y + ROW_H / 2);
    out.set(n.group, b);
  }
  return out;
}

test('the shop: traffic left to right, namespaces in separate boxes', () => {
  const nodes = [['shop/loadgen', 'shop'], ['shop/frontend', 'shop'], ['shop/catalog', 'shop'], ['shop/cartservice', 'shop'],
    ['data/store', 'data'], ['kube-system/coredns', 'kube-system'], ['203.0.113.10', 'external']].map(([id, group]) => ({ id, group }));
  const edges = [e('shop/loadgen', 'shop/frontend'), e('shop/frontend', 'shop/catalog'), e('shop/frontend', 'shop/cartservice'),
    e('shop/frontend', 'kube-system/coredns'), e('shop/cartservice', 'kube-system/coredns'), e('shop/cartservice', 'data/store'),
    e('shop/cartservice', '203.0.113.10')];
  const p = layout(nodes, edges);
  assert.ok(p['shop/loadgen'].x < p['shop/frontend'].x);
  assert.ok(p['shop/frontend'].x < p['shop/catalog'].x);
  assert.ok(p['shop/cartservice'].x < p['data/store'].x);
  assert.deepEqual(layout(nodes, edges), p, 'deterministic');
  const b = [...boxes(nodes, p).values()];
  for (let i = 0; i < b.length; i += 1) {
    for (let j = i + 1; j < b.length; j += 1) {
      const overlap = b[i].x0 < b[j].x1 && b[j].x0 < b[i].x1 && b[i].y0 < b[j].y1 && b[j].y0 < b[i].y1;
      assert.ok(!overlap, `boxes ${i} and ${j} overlap`);
    }
  }
});

test('500 nodes / 5,000 edges: every node placed, no two on one spot, boxes apart', () => {
  const g = syntheticGraph();
  const nodes = g.nodes.map((n) => ({ id: n.id, group: n.group }));
  const p = layout(nodes, g.edges);
  assert.equal(Object.keys(p).length, 500);
  assert.equal(new Set(Object.values(p).map((q) => `${q.x},${q.y}`)).size, 500);
  const b = [...boxes(nodes, p).values()];
  for (let i = 0; i < b.length; i += 1) {
    for (let j = i + 1; j < b.length; j += 1) {
      assert.ok(!(b[i].x0 < b[j].x1 && b[j].x0 < b[i].x1 && b[i].y0 < b[j].y1 && b[j].y0 < b[i].y1), 'group boxes overlap');
    }
  }
});

test('placing new nodes moves nothing already placed', () => {
  const nodes = [{ id: 'a/x', group: 'a' }, { id: 'a/y', group: 'a' }];
  const edges = [e('a/x', 'a/y')];
  const p = layout(nodes, edges);
  const before = structuredClone(p);
  const added = [{ id: 'a/z', group: 'a' }, { id: 'b/w', group: 'b' }];
  const all = [...nodes, ...added];
  placeNew(added, all, [...edges, e('a/y', 'a/z'), e('a/z', 'b/w')], p);
  assert.deepEqual({ 'a/x': p['a/x'], 'a/y': p['a/y'] }, before);
  assert.ok(p['a/z'].x > p['a/y'].x, 'beside its predecessor');
  assert.ok(p['b/w'].x > p['a/z'].x, 'a new group goes right');
});

test('the filter keeps matching ports and the nodes they touch', () => {
  const now = Date.parse('2026-11-27T00:00:00Z');
  const iso = (ago) => new Date(now - ago).toISOString();
  const graph = {
    nodes: [{ id: 'a/x', group: 'a' }, { id: 'a/y', group: 'a' }, { id: 'b/z', group: 'b' }, { id: 'c/lonely', group: 'c' }],
    edges: [
      { id: 'a/x->a/y', source: 'a/x', target: 'a/y', verdict: 'forwarded', last_seen: iso(60e3),
        ports: [{ port: 80, protocol: 'TCP' }, { port: 53, protocol: 'UDP' }] },
      { id: 'a/y->b/z', source: 'a/y', target: 'b/z', verdict: 'dropped', last_seen: iso(2 * 3600e3),
        ports: [{ port: 6379, protocol: 'TCP', verdicts: { forwarded: 0, audit: 0, dropped: 3 } }] },
    ],
  };
  const none = { namespaces: [], protocol: '', port: null, verdict: '', since: '' };
  assert.equal(applyFilter(graph, none, now).nodes.length, 4, 'no filter: everything, lonely nodes too');
  const udp = applyFilter(graph, { ...none, protocol: 'UDP' }, now);
  assert.deepEqual(udp.edges.map((x) => x.ports.map((p) => p.port)), [[53]]);
  assert.deepEqual(udp.nodes.map((n) => n.id), ['a/x', 'a/y']);
  assert.deepEqual(applyFilter(graph, { ...none, verdict: 'dropped' }, now).edges.map((x) => x.id), ['a/y->b/z']);
  assert.deepEqual(applyFilter(graph, { ...none, since: '1h' }, now).edges.map((x) => x.id), ['a/x->a/y']);
  const ns = applyFilter(graph, { ...none, namespaces: ['b'] }, now);
  assert.deepEqual(ns.edges.map((x) => x.id), ['a/y->b/z']);
  assert.deepEqual(ns.nodes.map((n) => n.id).sort(), ['a/y', 'b/z']);
  assert.deepEqual(applyFilter(graph, { ...none, port: 8080 }, now).edges, []);
});

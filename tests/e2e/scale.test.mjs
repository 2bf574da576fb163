// Scale: a synthetic graph of 500 nodes and 5,000 edges fed to the real
// page through a route intercept. Asserts behaviour (everything drawn,
// incremental updates keep positions, zoom and selection) and reports
// timings; the numbers go to docs/benchmarks.md ("UI"), not into
// assertions.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { env, launch, newPage, waitFor } from './lib.mjs';
import { syntheticGraph } from './fixtures.mjs';

const AGENT = env('AGENT_URL');
let browser;
let page;
let graph = syntheticGraph();
const numbers = {};

before(async () => {
  browser = await launch();
  page = await newPage(browser.context);
  await page.route('**/api/graph**', (route) => route.fulfill({ contentType: 'application/json', body: JSON.stringify(graph) }));
  await page.route('**/api/modes', (route) => route.fulfill({ contentType: 'application/json', body: '{"modes":{},"default_mode":"observe"}' }));
  await page.route('**/api/events', (route) => route.abort());
});

after(async () => {
  console.log(`UI scale numbers: ${JSON.stringify(numbers)}`);
  await browser?.close();
});

test('500 nodes and 5,000 edges load and are drawn', async () => {
  const started = Date.now();
  await page.goto(`${AGENT}/`);
  await waitFor(page, () => window.weir?.graph?.cy.edges().length === 5000, undefined, 60000);
  numbers.first_render_ms = Date.now() - started;
  const stats = await page.evaluate(() => ({ ...window.weir.graph.stats, nodes: window.weir.graph.cy.nodes().filter((n) => !n.isParent()).length }));
  assert.equal(stats.nodes, 500);
  numbers.layout_worker_ms = Math.round(stats.lastLayoutMs);
  numbers.initial_update_ms = Math.round(stats.lastUpdateMs);
  const painted = await waitFor(page, () => window.weir.graph.stats.paintedAt && window.weir.graph.stats, undefined, 60000);
  numbers.initial_update_to_drawn_ms = Math.round(painted.lastPaintMs);
  numbers.navigation_to_drawn_ms = Math.round(painted.paintedAt);
});

test('zooming and panning keep frames coming', async () => {
  await page.evaluate(() => {
    window.__frames = [];
    const tick = (t) => { window.__frames.push(t); if (window.__frames.length < 100000) window.__raf = requestAnimationFrame(tick); };
    window.__raf = requestAnimationFrame(tick);
  });
  const box = await page.locator('#cy').boundingBox();
  await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
  for (let i = 0; i < 10; i += 1) { await page.mouse.wheel(0, -200); await page.waitForTimeout(50); }
  await page.mouse.down();
  for (let i = 0; i < 20; i += 1) { await page.mouse.move(box.x + box.width / 2 + i * 10, box.y + box.height / 2 + i * 5); }
  await page.mouse.up();
  for (let i = 0; i < 10; i += 1) { await page.mouse.wheel(0, 200); await page.waitForTimeout(50); }
  const frames = await page.evaluate(() => { cancelAnimationFrame(window.__raf); return window.__frames; });
  const gaps = frames.slice(1).map((t, i) => t - frames[i]).sort((a, b) => a - b);
  assert.ok(gaps.length > 5, 'frames were drawn');
  numbers.interaction_frames = gaps.length;
  numbers.frame_p50_ms = Math.round(gaps[Math.floor(gaps.length / 2)]);
  numbers.frame_p95_ms = Math.round(gaps[Math.floor(gaps.length * 0.95)]);
  numbers.frame_max_ms = Math.round(gaps[gaps.length - 1]);
});

test('selecting a node, searching', async () => {
  let started = Date.now();
  await page.evaluate(() => window.weir.graph.select('team-03/svc-04'));
  await page.locator('#tab-details .details[data-kind="node"]').waitFor();
  numbers.select_to_details_ms = Date.now() - started;
  started = Date.now();
  const matched = await page.evaluate(() => window.weir.graph.highlight('svc-07', { focus: false }));
  numbers.search_ms = Date.now() - started;
  assert.equal(matched, 24);
  await page.evaluate(() => window.weir.graph.highlight('', { focus: false }));
});

test('an update adds and removes elements in place: positions, zoom and selection stay', async () => {
  const before = await page.evaluate(() => {
    const cy = window.weir.graph.cy;
    const positions = {};
    cy.nodes().forEach((n) => { if (!n.isParent()) positions[n.id()] = { ...n.position() }; });
    return { positions, zoom: cy.zoom(), pan: { ...cy.pan() }, selected: cy.$(':selected').map((e) => e.id()) };
  });
  assert.deepEqual(before.selected, ['team-03/svc-04']);
  // 10 new workloads with 100 edges; 50 edges gone; a verdict changed.
  const next = structuredClone(graph);
  for (let i = 0; i < 10; i += 1) {
    next.nodes.push({ id: `team-00/new-${i}`, kind: 'workload', group: 'team-00', name: `new-${i}`, namespace: 'team-00', workload: `new-${i}`, labels: {}, pods: [], mode: 'observe' });
    for (let j = 0; j < 10; j += 1) {
      const target = next.nodes[j * 7 + i].id;
      next.edges.push({ ...next.edges[0], id: `team-00/new-${i}->${target}`, source: `team-00/new-${i}`, target });
    }
  }
  const removed = next.edges.splice(100, 50).map((e) => e.id);
  next.edges[0] = { ...next.edges[0], verdict: 'dropped' };
  graph = next;
  const result = await page.evaluate(async () => {
    const longest = [];
    const observer = new PerformanceObserver((list) => { for (const e of list.getEntries()) longest.push(e.duration); });
    try { observer.observe({ type: 'longtask' }); } catch { /* not supported */ }
    const started = performance.now();
    window.weir.graph.stats.paintedAt = 0;
    await window.weir.refresh();
    await window.weir.graph.queue;
    const ms = performance.now() - started;
    while (!window.weir.graph.stats.paintedAt) await new Promise((r) => setTimeout(r, 20));
    const drawn = window.weir.graph.stats.lastPaintMs;
    await new Promise((r) => setTimeout(r, 100));
    observer.disconnect();
    const cy = window.weir.graph.cy;
    const positions = {};
    cy.nodes().forEach((n) => { if (!n.isParent()) positions[n.id()] = { ...n.position() }; });
    return { ms, drawn, applied: window.weir.graph.stats.lastUpdateMs, longestTask: Math.max(0, ...longest), positions, zoom: cy.zoom(), pan: { ...cy.pan() }, selected: cy.$(':selected').map((e) => e.id()), edges: cy.edges().length, verdict: cy.getElementById(cy.edges()[0].id()).data('verdict') };
  });
  numbers.refetch_and_update_ms = Math.round(result.ms);
  numbers.incremental_apply_ms = Math.round(result.applied);
  numbers.incremental_apply_to_drawn_ms = Math.round(result.drawn);
  numbers.incremental_longest_task_ms = Math.round(result.longestTask);
  assert.equal(result.edges, 5000 + 100 - 50);
  assert.equal(result.zoom, before.zoom);
  assert.deepEqual(result.pan, before.pan);
  assert.deepEqual(result.selected, before.selected);
  for (const [id, p] of Object.entries(before.positions)) assert.deepEqual(result.positions[id], p, `${id} moved`);
  for (let i = 0; i < 10; i += 1) assert.ok(result.positions[`team-00/new-${i}`], 'new nodes placed');
  const gone = await page.evaluate((ids) => ids.filter((id) => window.weir.graph.cy.getElementById(id).nonempty()), removed);
  assert.deepEqual(gone, []);
  const dropped = await page.evaluate((id) => window.weir.graph.cy.getElementById(id).data('verdict'), graph.edges[0].id);
  assert.equal(dropped, 'dropped');
});

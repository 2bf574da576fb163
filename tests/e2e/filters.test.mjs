// Filters and search in the page, on a small fixed graph fed through a
// route intercept: what is shown, and what the API is asked for.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { env, launch, newPage, waitFor } from './lib.mjs';

const AGENT = env('AGENT_URL');
const now = new Date().toISOString();
const old = new Date(Date.now() - 3 * 3600e3).toISOString();
const W = (ns, name) => ({ id: `${ns}/${name}`, kind: 'workload', group: ns, name, namespace: ns, workload: name, labels: { app: name }, pods: [], mode: 'observe' });
const E = (source, target, port, protocol, verdict = 'forwarded', last = now) => ({
  id: `${source}->${target}`, source, target, verdict, packets: 1, bytes: 1, connections: 1, first_seen: old, last_seen: last,
  ports: [{ port, protocol, connections: 1, packets: 1, bytes: 1, first_seen: old, last_seen: last, verdicts: { forwarded: verdict === 'forwarded' ? 1 : 0, audit: verdict === 'audit' ? 1 : 0, dropped: verdict === 'dropped' ? 1 : 0 } }],
});
const GRAPH = {
  version: 1,
  generated_at: now,
  nodes: [W('shop', 'frontend'), W('shop', 'cartservice'), W('data', 'store'), W('kube-system', 'coredns')],
  edges: [
    E('shop/frontend', 'shop/cartservice', 7070, 'TCP'),
    E('shop/frontend', 'kube-system/coredns', 53, 'UDP'),
    E('shop/cartservice', 'data/store', 6379, 'TCP', 'forwarded', old),
    E('shop/frontend', 'data/store', 6379, 'TCP', 'dropped'),
  ],
};

let browser;
let page;
const asked = [];

before(async () => {
  browser = await launch();
  page = await newPage(browser.context);
  await page.route('**/api/graph**', (route) => {
    asked.push(new URL(route.request().url()).search);
    route.fulfill({ contentType: 'application/json', body: JSON.stringify(GRAPH) });
  });
  await page.route('**/api/events', (route) => route.abort());
  await page.goto(`${AGENT}/`);
  await waitFor(page, () => window.weir?.graph?.cy.edges().length === 4);
});

after(async () => { await browser?.close(); });

const shownEdges = () => page.evaluate(() => window.weir.graph.cy.edges().map((e) => e.id()).sort());

test('protocol, port, verdict and time window filter the edges, and go to the API', async () => {
  await page.selectOption('#f-protocol', 'UDP');
  await waitFor(page, () => window.weir.graph.cy.edges().length === 1);
  assert.deepEqual(await shownEdges(), ['shop/frontend->kube-system/coredns']);
  assert.ok(asked.some((q) => q.includes('protocol=UDP')), asked.join(' '));
  await page.selectOption('#f-protocol', '');

  await page.fill('#f-port', '6379');
  await page.press('#f-port', 'Enter');
  await page.locator('#f-port').blur();
  await waitFor(page, () => window.weir.graph.cy.edges().length === 2);
  assert.ok(asked.some((q) => q.includes('port=6379')));
  await page.fill('#f-port', '');
  await page.locator('#f-port').blur();

  await page.selectOption('#f-verdict', 'dropped');
  await waitFor(page, () => window.weir.graph.cy.edges().length === 1);
  assert.deepEqual(await shownEdges(), ['shop/frontend->data/store']);
  assert.equal(await page.evaluate(() => window.weir.graph.cy.getElementById('shop/frontend->data/store').data('color')), '#d64545');
  await page.selectOption('#f-verdict', '');

  await page.selectOption('#f-since', '1h');
  await waitFor(page, () => window.weir.graph.cy.edges().length === 3);
  assert.ok(!(await shownEdges()).includes('shop/cartservice->data/store'), 'last seen 3 h ago');
  assert.ok(asked.some((q) => q.includes('since=1h')));
  await page.selectOption('#f-since', '');
  await waitFor(page, () => window.weir.graph.cy.edges().length === 4);
});

test('the namespace filter keeps the namespace and its peers', async () => {
  await page.click('#f-namespace-btn');
  await page.check('#f-namespace input[value="kube-system"]');
  await waitFor(page, () => window.weir.graph.cy.edges().length === 1);
  assert.equal(await page.textContent('#f-namespace-btn'), 'kube-system');
  const nodes = await page.evaluate(() => window.weir.graph.cy.nodes().filter((n) => !n.isParent()).map((n) => n.id()).sort());
  assert.deepEqual(nodes, ['kube-system/coredns', 'shop/frontend']);
  assert.ok(asked.some((q) => q.includes('namespace=kube-system')));
  await page.uncheck('#f-namespace input[value="kube-system"]');
  await waitFor(page, () => window.weir.graph.cy.edges().length === 4);
});

test('search highlights the matching workloads and fades the rest', async () => {
  await page.fill('#search', 'cart');
  await waitFor(page, () => window.weir.graph.cy.getElementById('shop/cartservice').hasClass('match'));
  const state = await page.evaluate(() => {
    const cy = window.weir.graph.cy;
    return { store: cy.getElementById('data/store').hasClass('faded'), coredns: cy.getElementById('kube-system/coredns').hasClass('faded') };
  });
  // The store talks to the cart: kept; coredns does not: faded.
  assert.deepEqual(state, { store: false, coredns: true });
  await page.fill('#search', '');
  await waitFor(page, () => window.weir.graph.cy.$('.faded').length === 0);
});

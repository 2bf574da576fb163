// Coverage through a relay: the graph answer carries `coverage` (as
// `weir relay`'s answers do), served here by a route intercept. The badge
// says how many nodes the view covers and which are stale, the node list
// marks them, and a complete view says so; an agent's answers (no
// coverage) show no badge.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { env, launch, newPage, waitFor } from './lib.mjs';
import { syntheticGraph } from './fixtures.mjs';

const AGENT = env('AGENT_URL');
let browser;

before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

const minuteAgo = () => new Date(Date.now() - 60e3).toISOString();

function relayCoverage(stale) {
  const nodes = ['a', 'b', 'c'].map((node) => ({
    node,
    state: stale.includes(node) ? 'stale' : 'synced',
    epoch: `epoch-${node}`,
    version: 7,
    last_sync: minuteAgo(),
    error: stale.includes(node) ? `${node}.agents.weir.internal: connection refused` : null,
  }));
  return { expected: 3, synced: 3 - stale.length, stale, nodes };
}

/** Script errors and CSP violations (the aborted event stream aside). */
async function scriptProblems(page) {
  return (await page.problems()).filter((p) => !/Failed to load resource/.test(p));
}

/** A page whose graph answers come from `answer()` (a relay's, or not). */
async function pageWith(answer) {
  const page = await newPage(browser.context);
  const graph = syntheticGraph({ namespaces: 2, perNamespace: 3, externals: 1, edges: 8 });
  await page.route('**/api/graph**', (route) => route.fulfill({
    contentType: 'application/json',
    body: JSON.stringify({ ...graph, ...answer() }),
  }));
  await page.route('**/api/modes', (route) => route.fulfill({
    contentType: 'application/json',
    body: JSON.stringify({ modes: {}, default_mode: 'observe', ...answer() }),
  }));
  await page.route('**/api/events', (route) => route.abort());
  await page.goto(`${AGENT}/`);
  await waitFor(page, () => window.weir?.graph?.cy.edges().length === 8);
  return page;
}

test('a relay missing a node says how many it covers and marks the stale one', async () => {
  let coverage = relayCoverage(['b']);
  const page = await pageWith(() => ({ coverage }));
  const badge = page.locator('#coverage');
  await badge.waitFor({ state: 'visible' });
  assert.equal(await badge.textContent(), '2 of 3 nodes; stale: b');
  assert.ok(await badge.evaluate((b) => b.classList.contains('partial')));

  await badge.click();
  const list = page.locator('#coverage-nodes:not(.hidden)');
  await list.waitFor();
  const rows = await page.$$eval('#coverage-nodes .cov-node', (nodes) => nodes.map((n) => ({
    node: n.dataset.node, state: n.dataset.state, stale: n.classList.contains('stale'), text: n.textContent,
  })));
  assert.deepEqual(rows.map((r) => [r.node, r.state, r.stale]), [['a', 'synced', false], ['b', 'stale', true], ['c', 'synced', false]]);
  assert.match(rows[1].text, /connection refused/);
  assert.match(rows[0].text, /synced 1m ago/);

  // b comes back: the next refresh says the view is complete.
  coverage = relayCoverage([]);
  await page.evaluate(() => window.weir.refresh());
  await waitFor(page, () => document.getElementById('coverage').textContent === '3 of 3 nodes');
  assert.ok(await badge.evaluate((b) => b.classList.contains('complete')));
  assert.equal(await page.locator('#coverage-nodes .cov-node.stale').count(), 0);
  assert.deepEqual(await scriptProblems(page), []);
  await page.close();
});

test('an agent (no coverage in its answers) shows no coverage badge', async () => {
  const page = await pageWith(() => ({}));
  // The graph is drawn, and the badge stays hidden.
  assert.ok(await page.locator('#coverage-wrap').evaluate((w) => w.classList.contains('hidden')));
  assert.equal(await page.locator('#coverage').textContent(), '');
  assert.deepEqual(await scriptProblems(page), []);
  await page.close();
});

// The error state: an agent that does not answer, or answers errors, gets
// a banner and a message in place of the graph (never a blank page), and
// the UI recovers by itself or on "Retry now".

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { env, launch, newPage, waitFor } from './lib.mjs';

const AGENT = env('AGENT_URL');
let browser;

before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

test('an unreachable agent shows an error banner, then recovers', async () => {
  const page = await newPage(browser.context);
  // The page loads; every API request fails as if the agent were gone.
  await page.route('**/api/**', (route) => route.abort('connectionrefused'));
  await page.goto(`${AGENT}/`);
  const banner = page.locator('#banner:not(.hidden)');
  await banner.waitFor({ timeout: 15000 });
  assert.match(await banner.textContent(), /Cannot reach the weir agent/);
  const empty = page.locator('#empty.error:not(.hidden)');
  await empty.waitFor();
  assert.match(await empty.textContent(), /Cannot reach/);
  assert.match(await page.textContent('#live-text'), /offline/);

  await page.unroute('**/api/**');
  await page.click('#banner-retry');
  await page.locator('#banner.hidden').waitFor({ state: 'attached', timeout: 15000 });
  await waitFor(page, () => window.weir.graph.cy.nodes().length > 0);
  assert.ok(await page.locator('#empty').evaluate((e) => e.classList.contains('hidden')));
  await page.close();
});

test('an agent answering errors shows them', async () => {
  const page = await newPage(browser.context);
  await page.route('**/api/graph**', (route) => route.fulfill({
    status: 500,
    contentType: 'application/json',
    body: JSON.stringify({ error: 'internal error', status: 500 }),
  }));
  await page.goto(`${AGENT}/`);
  const banner = page.locator('#banner:not(.hidden)');
  await banner.waitFor({ timeout: 15000 });
  const text = await banner.textContent();
  assert.match(text, /answered an error \(500\)/);
  assert.match(text, /internal error/);
  await page.close();
});

test('losses of the agent show a banner, and it goes when they end', async () => {
  const page = await newPage(browser.context);
  let degraded = [{
    reason: 'flow_table_full',
    message: 'flow table full (64 entries): 900 packets of new connections went untracked (120.0/s); those connections are missing from the graph: raise --flow-table-entries',
    incomplete: true,
    from: '2026-01-01T10:00:00Z',
    until: null,
    lost: 900,
    rate_per_second: 120,
  }];
  await page.route('**/api/graph**', async (route) => {
    const response = await route.fetch();
    const graph = await response.json();
    await route.fulfill({ response, json: { ...graph, incomplete: degraded.length > 0, degraded } });
  });
  await page.goto(`${AGENT}/`);
  const banner = page.locator('#degraded:not(.hidden)');
  await banner.waitFor({ timeout: 15000 });
  const text = await banner.textContent();
  assert.match(text, /graph is incomplete/);
  assert.match(text, /flow table full \(64 entries\)/);
  assert.match(text, /since 2026-01-01T10:00:00Z, ongoing/);
  degraded = [];
  await page.evaluate(() => window.weir.refresh());
  await page.locator('#degraded.hidden').waitFor({ state: 'attached', timeout: 15000 });
  await page.close();
});

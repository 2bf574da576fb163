#!/usr/bin/env node
// The README's picture of the UI (docs/img/ui-graph.png), taken from a
// running agent in Debian's headless Chromium:
//   make demo && node scripts/screenshot.mjs [URL] [OUT]
// URL defaults to http://127.0.0.1:9090 (make demo's), OUT to
// docs/img/ui-graph.png. Needs `make e2edeps` (playwright-core).
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { mkdirSync } from 'node:fs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const { launch, newPage, waitFor } = await import(join(root, 'tests/e2e/lib.mjs'));

const url = process.argv[2] || 'http://127.0.0.1:9090';
const out = process.argv[3] || join(root, 'docs/img/ui-graph.png');

const browser = await launch();
try {
  const page = await newPage(browser.context);
  await page.goto(`${url}/`);
  await waitFor(page, () => (window.weir?.graph?.cy.edges().length ?? 0) > 0, undefined, 30000);
  await page.waitForTimeout(1500); // layout, fit, one more refresh
  // An edge selected shows the details panel as well: one that a policy
  // denies when there is one, else the cart's to the store.
  await page.evaluate(() => {
    const cy = window.weir.graph.cy;
    const denied = cy.edges().filter((e) => e.data('verdict') !== 'forwarded');
    const edge = denied.nonempty() ? denied[0] : cy.getElementById('shop/cartservice->data/store');
    window.weir.graph.select(edge.nonempty() ? edge.id() : cy.edges()[0].id());
  });
  await page.waitForTimeout(1000);
  mkdirSync(dirname(out), { recursive: true });
  await page.screenshot({ path: out });
  const problems = (await page.problems()).filter((p) => /CSP|Content.Security/.test(p));
  if (problems.length) throw new Error(`CSP problems: ${problems.join('; ')}`);
  console.log(`wrote ${out}`);
} finally {
  await browser.close();
}

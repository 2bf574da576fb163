// The UI against a real agent watching the demo shop lab (started by
// tests/tests/ui.rs): the graph, edge details, live updates, the download
// against `weir export`, the token, and enforcing a namespace from the UI.
// The tests run in order and share one browser page.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { CSP, env, launch, newPage, pod, probe, renderedPoint, waitFor, weir } from './lib.mjs';

const AGENT = env('AGENT_URL');
const TOKEN = env('TOKEN');
const LAB = env('LAB');

const WORKLOADS = ['shop/loadgen', 'shop/frontend', 'shop/cartservice', 'shop/catalog', 'data/store', 'kube-system/coredns', '203.0.113.10'];
const EDGES = [
  'shop/loadgen->shop/frontend',
  'shop/frontend->shop/catalog',
  'shop/frontend->shop/cartservice',
  'shop/frontend->kube-system/coredns',
  'shop/cartservice->kube-system/coredns',
  'shop/cartservice->data/store',
  'shop/cartservice->203.0.113.10',
];

let browser;
let page;

before(async () => {
  browser = await launch();
  page = await newPage(browser.context);
  await page.goto(`${AGENT}/#token=${encodeURIComponent(TOKEN)}`);
});

after(async () => {
  await browser?.close();
});

async function cspProblems() {
  return (await page.problems()).filter((p) => /Content.Security.Policy|CSP violation|page error/i.test(p));
}

test('the page has a strict CSP, takes the token from the URL and hides it', async () => {
  const response = await fetch(`${AGENT}/`);
  assert.equal(response.status, 200);
  assert.equal(response.headers.get('content-security-policy'), CSP);
  assert.equal(await page.evaluate(() => window.location.hash), '');
  assert.equal(await page.evaluate(() => sessionStorage.getItem('weir-token')), TOKEN);
});

test('the graph shows the shop: workloads in namespace boxes, the edges between them', async () => {
  const ids = await waitFor(page, (want) => {
    const cy = window.weir?.graph?.cy;
    if (!cy) return false;
    const have = want.every((id) => cy.getElementById(id).nonempty());
    return have && cy.nodes().map((n) => n.id());
  }, [...WORKLOADS, ...EDGES]);
  for (const id of WORKLOADS) assert.ok(ids.includes(id), `${id} in ${ids}`);
  const parents = await page.evaluate((list) => list.map((id) => window.weir.graph.cy.getElementById(id).parent().id()), WORKLOADS);
  assert.deepEqual(parents, ['group:shop', 'group:shop', 'group:shop', 'group:shop', 'group:data', 'group:kube-system', 'group:external']);
  // Exactly what the API says, nothing more.
  const api = await (await fetch(`${AGENT}/api/graph`)).json();
  const shownEdges = await page.evaluate(() => window.weir.graph.cy.edges().map((e) => e.id()).sort());
  assert.deepEqual(shownEdges, api.edges.map((e) => e.id || `${e.source}->${e.target}`).sort());
  const label = await page.evaluate(() => window.weir.graph.cy.getElementById('shop/frontend->shop/catalog').data('label'));
  assert.equal(label, '3550/TCP');
  // The lab's ExternalHost name comes with the address.
  const external = await page.evaluate(() => window.weir.graph.cy.getElementById('203.0.113.10').data('label'));
  assert.equal(external, 'payments · 203.0.113.10');
  const stats = await page.textContent('#stats');
  assert.match(stats, /6 workloads · 1 external · \d+ edges/);
  // The README's picture, from this very page, when asked for.
  if (process.env.SCREENSHOT) {
    mkdirSync(dirname(process.env.SCREENSHOT), { recursive: true });
    await page.waitForTimeout(500);
    await page.screenshot({ path: process.env.SCREENSHOT });
  }
});

test('clicking an edge shows its ports and counters', async () => {
  const point = await renderedPoint(page, 'shop/cartservice->data/store');
  assert.ok(point, 'edge is drawn');
  await page.mouse.click(point.x, point.y);
  const details = page.locator('#tab-details .details[data-kind="edge"]');
  await details.waitFor({ timeout: 10000 });
  assert.equal(await details.getAttribute('data-id'), 'shop/cartservice->data/store');
  await page.locator('#tab-details tr[data-port="6379/TCP"]').waitFor({ timeout: 10000 });
  const text = await details.textContent();
  assert.match(text, /Connections/);
  assert.match(text, /6379\/TCP/);
});

test('a live update adds a new edge and keeps zoom, pan, positions and selection', async () => {
  const before = await page.evaluate(() => {
    const cy = window.weir.graph.cy;
    cy.zoom(0.9);
    return {
      zoom: cy.zoom(),
      pan: cy.pan(),
      frontend: cy.getElementById('shop/frontend').position(),
      selected: cy.$(':selected').map((e) => e.id()),
    };
  });
  assert.deepEqual(before.selected, ['shop/cartservice->data/store']);
  const loadgen = pod(LAB, 'shop', 'loadgen');
  const catalog = pod(LAB, 'shop', 'catalog-');
  assert.ok(probe(LAB, loadgen, catalog, '3550/TCP'), 'loadgen -> catalog connects in observe mode');
  await waitFor(page, () => window.weir.graph.cy.getElementById('shop/loadgen->shop/catalog').nonempty(), undefined, 30000);
  const afterUpdate = await page.evaluate(() => {
    const cy = window.weir.graph.cy;
    return {
      zoom: cy.zoom(),
      pan: cy.pan(),
      frontend: cy.getElementById('shop/frontend').position(),
      selected: cy.$(':selected').map((e) => e.id()),
    };
  });
  assert.deepEqual(afterUpdate, before);
});

test('the mode switch says why it is disabled while a namespace is not ready, and what automatic promotion does next', async () => {
  await page.click('.tabs button[data-tab="modes"]');
  // shop just saw a new edge (loadgen -> catalog): within the quiet period.
  const shop = page.locator('.modes-row[data-namespace="shop"]');
  await shop.locator('button[data-mode="audit"][disabled]').waitFor({ timeout: 10000 });
  assert.ok(await shop.locator('button[data-mode="enforce"]').isDisabled());
  assert.ok(!(await shop.locator('button[data-mode="observe"]').isDisabled()), 'going down is never gated');
  const why = await page.textContent('.not-ready[data-namespace="shop"]');
  assert.match(why, /^audit and enforce disabled: not ready: its last new edge appeared \d+s ago, within the quiet period of 20s/);
  const status = await (await fetch(`${AGENT}/api/status`)).json();
  const reason = status.namespaces.find((n) => n.namespace === 'shop').reason;
  // The same words as the API's (its seconds may have moved on since).
  const words = (text) => text.replace(/\d+s ago/, 'Ns ago');
  assert.ok(words(why).endsWith(words(reason)), `${why} | ${reason}`);
  assert.match(await shop.locator('button[data-mode="audit"]').getAttribute('title'), /^not ready: /);

  // kube-system is annotated weir.dev/promote: auto (1h of audit): it says
  // its next step, goes to audit by itself once quiet, then says when enforce comes.
  const promotion = page.locator('.promotion[data-namespace="kube-system"]');
  await promotion.waitFor({ timeout: 10000 });
  assert.match(await promotion.textContent(), /^automatic promotion: (audit once ready \(not ready: |enforce at \d{4}-)/);
  await page.locator('.modes-row[data-namespace="kube-system"] button[data-mode="audit"].on').waitFor({ timeout: 40000 });
  await page.waitForFunction(() => /^automatic promotion: enforce at \d{4}-\d\d-\d\dT[^ ]+Z \(last: observe → audit at /
    .test(document.querySelector('.promotion[data-namespace="kube-system"]')?.textContent || ''), undefined, { timeout: 10000 });
  const modes = await (await fetch(`${AGENT}/api/modes`)).json();
  assert.equal(modes.promotion['kube-system'].next, 'enforce', JSON.stringify(modes));

  // data was quiet all along: once its quiet period ran out, its switch is enabled.
  await page.locator('.modes-row[data-namespace="data"] button[data-mode="audit"]:not([disabled])').waitFor({ timeout: 30000 });
  assert.equal(await page.locator('.not-ready[data-namespace="data"]').count(), 0);
});

test('the downloaded YAML is byte-identical to `weir export`', async () => {
  await page.click('.tabs button[data-tab="policies"]');
  const button = page.locator('#policies-download');
  let last = '';
  for (let attempt = 0; attempt < 3; attempt += 1) {
    await page.waitForFunction(() => !document.getElementById('policies-download').disabled, undefined, { timeout: 20000 });
    const [download] = await Promise.all([page.waitForEvent('download'), button.click()]);
    assert.equal(download.suggestedFilename(), 'weir-policies.yaml');
    const downloaded = readFileSync(await download.path(), 'utf8');
    const exported = weir(['export', '--server', AGENT]);
    assert.match(downloaded, /kind: NetworkPolicy/);
    if (downloaded === exported) return;
    last = `downloaded:\n${downloaded}\nexported:\n${exported}`;
    // The graph moved between the two reads: load the panel again.
    await page.selectOption('#policies-ns', '');
    await page.click('.tabs button[data-tab="policies"]');
  }
  assert.fail(`the download differs from weir export:\n${last}`);
});

test('a change without the token is refused, in the API and in the UI', async () => {
  const response = await fetch(`${AGENT}/api/modes/data`, {
    method: 'PUT',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ mode: 'enforce' }),
  });
  assert.equal(response.status, 401);
  assert.ok((await response.json()).error, 'JSON error body');
  const wrong = await fetch(`${AGENT}/api/modes/data`, {
    method: 'PUT',
    headers: { 'Content-Type': 'application/json', Authorization: 'Bearer not-the-token' },
    body: JSON.stringify({ mode: 'enforce' }),
  });
  assert.equal(wrong.status, 401);

  // The UI without its token: the write asks for one; cancelled, nothing changes.
  await page.evaluate(() => sessionStorage.removeItem('weir-token'));
  await page.click('.tabs button[data-tab="modes"]');
  await page.click('.modes-row[data-namespace="data"] button[data-mode="audit"]');
  await page.locator('#confirm-ok:not([disabled])').click();
  await page.locator('#token-dialog[open]').waitFor();
  await page.click('#token-cancel');
  const error = page.locator('#confirm-body .mode-error');
  await error.waitFor();
  assert.match(await error.textContent(), /401/);
  await page.click('#confirm-cancel');
  const modes = await (await fetch(`${AGENT}/api/modes`)).json();
  assert.notEqual(modes.modes?.data, 'audit');
});

test('enforcing a namespace from the UI drops the never-observed, keeps the observed', async () => {
  // The token, typed into the dialog this time.
  await page.click('.tabs button[data-tab="policies"]');
  await page.waitForFunction(() => !document.getElementById('policies-apply').disabled, undefined, { timeout: 20000 });
  await page.click('#policies-apply');
  await page.click('#confirm-ok');
  await page.locator('#token-dialog[open]').waitFor();
  await page.fill('#token-input', TOKEN);
  await page.click('#token-ok');
  await page.waitForFunction(() => /Applied/.test(document.querySelector('#tab-policies .toolrow .hint')?.textContent || ''), undefined, { timeout: 30000 });

  await page.click('.tabs button[data-tab="modes"]');
  await page.click('.modes-row[data-namespace="data"] button[data-mode="enforce"]');
  // The impact comes first: the observed traffic of the last hour is allowed.
  const impact = page.locator('#confirm-body .impact p');
  await impact.waitFor({ timeout: 20000 });
  assert.equal(await impact.getAttribute('data-denied'), '0', await impact.textContent());
  await page.locator('#confirm-ok:not([disabled])').click();
  await page.locator('.modes-row[data-namespace="data"] button[data-mode="enforce"].on').waitFor({ timeout: 20000 });
  const modes = await (await fetch(`${AGENT}/api/modes`)).json();
  assert.equal(modes.modes.data, 'enforce');

  const loadgen = pod(LAB, 'shop', 'loadgen');
  const frontend = pod(LAB, 'shop', 'frontend-');
  const cart = pod(LAB, 'shop', 'cartservice-');
  const store = pod(LAB, 'data', 'store-');
  assert.equal(probe(LAB, loadgen, store, '6379/TCP'), false, 'never observed: loadgen -> store is dropped');
  assert.equal(probe(LAB, frontend, store, '6379/TCP'), false, 'never observed: frontend -> store is dropped');
  assert.equal(probe(LAB, cart, store, '6379/TCP'), true, 'observed: cartservice -> store keeps working');
  assert.equal(probe(LAB, frontend, pod(LAB, 'shop', 'catalog-'), '3550/TCP'), true, 'observed elsewhere keeps working');
});

test('the pending queue lists what enforce dropped: approve from the browser after the diff, reject keeps it dropped', async () => {
  const approved = 'shop/frontend->data/store:6379/TCP';
  const rejected = 'shop/loadgen->data/store:6379/TCP';
  const frontend = pod(LAB, 'shop', 'frontend-');
  const loadgen = pod(LAB, 'shop', 'loadgen');
  const store = pod(LAB, 'data', 'store-');
  await page.click('.tabs button[data-tab="pending"]');
  const row = page.locator(`.pending-row[data-id="${approved}"]`);
  const other = page.locator(`.pending-row[data-id="${rejected}"]`);
  for (let i = 0; i < 40 && !((await row.count()) && (await other.count())); i += 1) {
    await page.waitForTimeout(500);
    await page.click('#pending-refresh');
  }
  await row.waitFor({ timeout: 5000 });
  assert.match(await row.textContent(), /ingress of data: .*isolated by .*data\/weir-default-deny/);
  assert.match(await page.textContent('.tabs button[data-tab="pending"]'), /Pending \(\d+\)/);

  // Approve: the diff of the enforced policies first, nothing written yet.
  await row.locator('button.approve').click();
  const diff = page.locator('#confirm-body pre.diff');
  await diff.waitFor({ timeout: 20000 });
  assert.match(await diff.textContent(), /\+  name: weir-allow-in-frontend-to-store-6379-tcp/);
  assert.match(await diff.textContent(), /\+\+\+ approved\/data\.yaml/);
  const names = async () => (await (await fetch(`${AGENT}/api/policies/enforced`)).json())
    .policies.map((p) => `${p.metadata.namespace}/${p.metadata.name}`);
  assert.ok(!(await names()).some((n) => n.includes('weir-allow-')), 'nothing written before the confirmation');
  assert.equal(probe(LAB, frontend, store, '6379/TCP'), false, 'still dropped while the dialog is open');
  await page.locator('#confirm-ok:not([disabled])').click();
  await row.waitFor({ state: 'detached', timeout: 30000 });
  assert.ok((await names()).includes('data/weir-allow-in-frontend-to-store-6379-tcp'), `${await names()}`);
  assert.equal(probe(LAB, frontend, store, '6379/TCP'), true, 'approved: frontend -> store passes');

  // Reject: out of the list, still dropped.
  await other.locator('button.reject').click();
  await page.locator('#confirm-ok:not([disabled])').click();
  await other.waitFor({ state: 'detached', timeout: 30000 });
  assert.equal(probe(LAB, loadgen, store, '6379/TCP'), false, 'rejected: loadgen -> store stays dropped');
  const pending = await (await fetch(`${AGENT}/api/pending`)).json();
  assert.ok(!pending.entries.some((e) => e.id === rejected || e.id === approved), JSON.stringify(pending));

  // Both decisions are in the audit log, made by the UI.
  const audit = await (await fetch(`${AGENT}/api/audit`)).json();
  const decided = audit.entries.filter((e) => e.kind === 'approve' || e.kind === 'reject')
    .map((e) => [e.kind, e.who, e.details.edge]);
  assert.deepEqual(decided, [['approve', 'ui', approved], ['reject', 'ui', rejected]]);
});

test('no CSP violation and no script error on the page', async () => {
  assert.deepEqual(await cspProblems(), []);
});

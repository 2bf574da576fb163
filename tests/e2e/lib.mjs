// Shared by the end-to-end tests: Debian's Chromium driven by
// playwright-core (no browser is ever downloaded), the agent's address and
// token from the environment (set by tests/tests/ui.rs), the weir CLI.

import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

/** A required environment variable; the tests fail loudly without it. */
export function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run these tests through tests/tests/ui.rs (make test)`);
  return value;
}

export const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
  + "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/** A fresh headless Chromium with its own profile; `close()` removes it. */
export async function launch() {
  const profile = mkdtempSync(join(tmpdir(), 'weir-e2e-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    acceptDownloads: true,
    viewport: { width: 1440, height: 860 },
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
  return {
    context,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/**
 * A page that records console errors and CSP violations
 * (`page.problems()` returns them).
 */
export async function newPage(context) {
  const page = await context.newPage();
  const problems = [];
  page.on('console', (message) => {
    const text = message.text();
    if (message.type() === 'error' || /Content.Security.Policy/i.test(text)) problems.push(`console ${message.type()}: ${text}`);
  });
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  await page.addInitScript(() => {
    window.__cspViolations = [];
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__cspViolations.push(`${e.violatedDirective} blocked ${e.blockedURI} (${e.sourceFile}:${e.lineNumber})`);
    });
  });
  page.problems = async () => {
    const violations = await page.evaluate(() => window.__cspViolations || []).catch(() => []);
    return [...problems, ...violations.map((v) => `CSP violation: ${v}`)];
  };
  return page;
}

/** Wait until `fn()` (in the page) returns a truthy value; returns it. */
export async function waitFor(page, fn, arg, timeout = 20000) {
  const handle = await page.waitForFunction(fn, arg, { timeout, polling: 200 });
  return handle.jsonValue();
}

/** Run the weir CLI; returns stdout, throws with stderr on failure. */
export function weir(args, options = {}) {
  return execFileSync(env('WEIR_BIN'), args, { encoding: 'utf8', maxBuffer: 64 << 20, ...options });
}

/** `weir lab probe`: true when the connection gets through. */
export function probe(lab, from, to, port) {
  const out = spawnSync(env('WEIR_BIN'), ['lab', '--lab', lab, 'probe', from, to, port, '--timeout', '2s'], { encoding: 'utf8' });
  if (out.status === 0) return true;
  if (out.status === 1) return false;
  throw new Error(`probe ${from} -> ${to} ${port} errored (${out.status}): ${out.stderr}`);
}

/** `ns/name` of the first pod of `ns` whose name starts with `prefix`. */
export function pod(lab, ns, prefix) {
  const status = JSON.parse(weir(['lab', '--lab', lab, 'status', '-o', 'json']));
  const found = status.pods.find((p) => p.namespace === ns && p.name.startsWith(prefix));
  if (!found) throw new Error(`no pod ${ns}/${prefix}* in lab ${lab}`);
  return `${ns}/${found.name}`;
}

/** The client position of an element's centre (node) or midpoint (edge). */
export async function renderedPoint(page, id) {
  return page.evaluate((eleId) => {
    const cy = window.weir.graph.cy;
    const ele = cy.getElementById(eleId);
    if (ele.empty()) return null;
    const p = ele.isEdge() ? ele.renderedMidpoint() : ele.renderedPosition();
    const box = cy.container().getBoundingClientRect();
    return { x: box.left + p.x, y: box.top + p.y };
  }, id);
}

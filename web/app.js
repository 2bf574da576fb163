// The weir UI: wires the graph, filters, panels, live updates and the
// error state together.

import * as api from './client.js';
import { GraphView } from './graph.js';
import { Filters, applyFilter } from './filters.js';
import { Details } from './details.js';
import { Policies } from './policies.js';
import { Modes } from './modes.js';
import { Pending } from './pending.js';
import { Coverage } from './coverage.js';
import { degradedText } from './dom.js';

const $ = (id) => document.getElementById(id);

const state = {
  graph: { nodes: [], edges: [] }, // as last fetched (server-filtered)
  shown: { nodes: [], edges: [] }, // after the client-side filter
  modes: null,
  namespaces: new Set(),
  loaded: false,
  failures: 0,
  retryTimer: null,
  refreshTimer: null,
  inFlight: null,
  live: false,
};

api.adoptTokenFromUrl();
api.onTokenNeeded((message) => askToken(message));

const graph = new GraphView($('cy'), {
  onSelect: (selection) => {
    if (selection) showTab('details');
    details.show(selection);
  },
  onLayout: () => renderStats(),
});
const details = new Details($('tab-details'), {
  graphLookup: (kind, id) => (kind === 'edge'
    ? state.graph.edges.find((e) => (e.id || `${e.source}->${e.target}`) === id)
    : state.graph.nodes.find((n) => n.id === id)),
});
const filters = new Filters(() => refresh());
const policies = new Policies($('tab-policies'));
const modes = new Modes($('tab-modes'), { onChanged: (m) => { state.modes = m; render(); } });
const pending = new Pending($('tab-pending'), {
  onCount: (n) => { document.querySelector('.tabs button[data-tab="pending"]').textContent = n ? `Pending (${n})` : 'Pending'; },
});
const coverage = new Coverage($('coverage-wrap'), $('coverage'), $('coverage-nodes'));

// For the end-to-end tests and the browser console.
window.weir = { graph, state, refresh: () => refresh(), filters };

// ---- tabs -------------------------------------------------------------
function showTab(name) {
  for (const button of document.querySelectorAll('.tabs button')) {
    button.classList.toggle('active', button.dataset.tab === name);
  }
  for (const tab of ['details', 'policies', 'modes', 'pending']) $(`tab-${tab}`).classList.toggle('hidden', tab !== name);
  if (name === 'policies') policies.load();
  if (name === 'modes') loadModes();
  if (name === 'pending') pending.load();
}
for (const button of document.querySelectorAll('.tabs button')) {
  button.addEventListener('click', () => showTab(button.dataset.tab));
}

// ---- the graph ----------------------------------------------------------
function modeMap() {
  const m = state.modes;
  if (!m) return {};
  const out = {};
  for (const ns of state.namespaces) out[ns] = m.modes?.[ns] || m.default_mode;
  return out;
}

function render() {
  state.shown = applyFilter(state.graph, filters.value());
  graph.update(state.shown, modeMap());
  const empty = $('empty');
  if (state.loaded && !state.shown.nodes.length) {
    empty.textContent = state.graph.nodes.length
      ? 'Nothing matches the filter.'
      : 'No flows observed yet. Traffic between pods appears here as the agent sees it.';
    empty.classList.remove('hidden', 'error');
  } else if (state.loaded) {
    empty.classList.add('hidden');
  }
  renderStats();
}

/** A full flow table or ring buffer: say so above the graph. */
function renderDegraded(data) {
  const text = degradedText(data.degraded, data.incomplete);
  $('degraded-text').textContent = text;
  $('degraded').classList.toggle('hidden', !text);
}

function renderStats() {
  const workloads = state.shown.nodes.filter((n) => n.kind !== 'external').length;
  const external = state.shown.nodes.length - workloads;
  const at = state.updatedAt ? state.updatedAt.toLocaleTimeString() : '–';
  $('stats').textContent = `${workloads} workloads · ${external} external · ${state.shown.edges.length} edges · updated ${at}`;
}

function learnNamespaces(nodes) {
  for (const n of nodes) if (n.kind !== 'external') state.namespaces.add(n.group || n.namespace);
  for (const ns of Object.keys(state.modes?.modes || {})) state.namespaces.add(ns);
  const names = [...state.namespaces].filter(Boolean);
  filters.setKnownNamespaces(names);
  policies.setNamespaces(names);
  modes.setNamespaces(names);
}

function normalise(graph) {
  return {
    ...graph,
    nodes: (graph.nodes || []).map((n) => ({ ...n, group: n.group || n.namespace || 'external', name: n.name || n.workload || n.id })),
    edges: (graph.edges || []).map((e) => ({ ...e, id: e.id || `${e.source}->${e.target}`, verdict: e.verdict || 'forwarded' })),
  };
}

async function fetchGraph() {
  try {
    const data = await api.get('/api/graph', filters.query());
    state.graph = normalise(data);
    renderDegraded(data);
    coverage.show(data.coverage);
    state.loaded = true;
    state.failures = 0;
    state.updatedAt = new Date();
    hideError();
    learnNamespaces(state.graph.nodes);
    render();
    await graph.queue;
  } catch (error) {
    showError(error);
  }
}

/**
 * Fetch and show the graph. A call while one runs makes it fetch once
 * more, and resolves when that one is shown.
 */
function refresh() {
  if (state.inFlight) { state.again = true; return state.inFlight; }
  state.inFlight = (async () => {
    do { state.again = false; await fetchGraph(); } while (state.again);
  })().finally(() => { state.inFlight = null; });
  return state.inFlight;
}

/** Graph events come in bursts: at most one refetch a second. */
function scheduleRefresh() {
  if (state.refreshTimer) return;
  state.refreshTimer = setTimeout(() => { state.refreshTimer = null; refresh(); }, 1000);
}

async function loadModes() {
  try {
    state.modes = await api.get('/api/modes');
    modes.setModes(state.modes);
    learnNamespaces([]);
    render();
  } catch (error) {
    modes.setError(error);
  }
}

// ---- errors and retries -----------------------------------------------------
function showError(error) {
  state.failures += 1;
  const delay = Math.min(30, 2 ** Math.min(state.failures, 5));
  const what = error.unreachable ? 'Cannot reach the weir agent' : `The agent answered an error (${error.status})`;
  $('banner-text').textContent = `${what}: ${error.message}. Retrying in ${delay} s.`;
  $('banner').classList.remove('hidden');
  if (!state.loaded) {
    const empty = $('empty');
    empty.textContent = `${what}. The graph appears as soon as it answers.`;
    empty.classList.remove('hidden');
    empty.classList.add('error');
  }
  $('live').className = 'live off';
  $('live-text').textContent = 'offline';
  clearTimeout(state.retryTimer);
  state.retryTimer = setTimeout(() => refresh(), delay * 1000);
}

function hideError() {
  clearTimeout(state.retryTimer);
  $('banner').classList.add('hidden');
  renderLive();
}

$('banner-retry').addEventListener('click', () => refresh());

function renderLive() {
  $('live').className = `live ${state.live ? 'on' : ''}`;
  $('live-text').textContent = state.live ? 'live' : 'polling';
}

// ---- token dialog -------------------------------------------------------
function askToken(message) {
  const dialog = $('token-dialog');
  const input = $('token-input');
  $('token-error').textContent = api.token() ? `The token was refused: ${message}` : '';
  input.value = '';
  dialog.showModal();
  input.focus();
  return new Promise((resolve) => {
    const finish = (value) => {
      $('token-ok').removeEventListener('click', ok);
      $('token-cancel').removeEventListener('click', cancel);
      input.removeEventListener('keydown', key);
      dialog.removeEventListener('cancel', cancel);
      dialog.close();
      resolve(value);
    };
    const ok = () => finish(input.value.trim() || null);
    const cancel = () => finish(null);
    const key = (event) => { if (event.key === 'Enter') ok(); };
    $('token-ok').addEventListener('click', ok);
    $('token-cancel').addEventListener('click', cancel);
    input.addEventListener('keydown', key);
    dialog.addEventListener('cancel', cancel);
  });
}

// ---- toolbar and search ---------------------------------------------------
$('btn-fit').addEventListener('click', () => graph.fit());
$('btn-layout').addEventListener('click', () => graph.relayout());
let searchTimer = null;
$('search').addEventListener('input', (event) => {
  graph.highlight(event.target.value, { focus: false });
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => graph.highlight(event.target.value, { focus: true }), 500);
});
$('search').addEventListener('keydown', (event) => {
  if (event.key === 'Enter') graph.highlight(event.target.value, { focus: true });
});

// ---- live updates ---------------------------------------------------------
api.subscribe({
  graph: () => scheduleRefresh(),
  modes: (data) => { state.modes = data; modes.setModes(data); learnNamespaces([]); render(); },
  state: (connected) => { state.live = connected; if (!$('banner').classList.contains('hidden')) return; renderLive(); },
});
// Polling covers the time the event stream is down (and agents without it).
setInterval(() => { if (!state.live) refresh(); }, 5000);

refresh();
loadModes();

// The agent's HTTP API: reads, token-guarded writes, live events.

const TOKEN_KEY = 'weir-token';

/** An answer that is not a success, or no answer (status 0). */
export class ApiError extends Error {
  constructor(status, message, path) {
    super(message);
    this.status = status;
    this.path = path;
  }
  get unreachable() { return this.status === 0; }
}

/** Take `#token=...` from the address bar into sessionStorage, and hide it. */
export function adoptTokenFromUrl() {
  const match = /(?:^#|&)token=([^&]+)/.exec(window.location.hash);
  if (!match) return;
  sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
  const url = window.location.pathname + window.location.search;
  window.history.replaceState(null, '', url);
}

export function token() { return sessionStorage.getItem(TOKEN_KEY); }
export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

async function request(method, path, { body, raw, contentType, auth = false, timeoutMs = 15000 } = {}) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (raw !== undefined) headers['Content-Type'] = contentType;
  if (auth && token()) headers.Authorization = `Bearer ${token()}`;
  // Who decided, for the audit log (the token says only that it may).
  if (auth) headers['X-Weir-Actor'] = 'ui';
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: raw !== undefined ? raw : body === undefined ? undefined : JSON.stringify(body),
      signal: controller.signal,
      cache: 'no-store',
    });
  } catch (error) {
    throw new ApiError(0, `the agent is unreachable (${error.name === 'AbortError' ? 'timed out' : 'no answer'})`, path);
  } finally {
    clearTimeout(timer);
  }
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!response.ok) {
    const message = (data && data.error) || `${response.status} ${response.statusText}`.trim();
    throw new ApiError(response.status, message, path);
  }
  if (data === null && text) throw new ApiError(response.status, `${path}: the answer is not JSON`, path);
  return data;
}

/** GET a JSON document; `params` without empty values. */
export function get(path, params = {}) {
  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') query.set(k, v);
  }
  const qs = query.toString();
  return request('GET', qs ? `${path}?${qs}` : path);
}

let askToken = null;
/** How writes ask for a token after a 401: `async () => token | null`. */
export function onTokenNeeded(fn) { askToken = fn; }

/**
 * A write with the bearer token (`body` as JSON, or `{raw, contentType}`);
 * on 401 asks for a token once and retries.
 */
export async function write(method, path, body, { raw, contentType } = {}) {
  const options = { body, raw, contentType, auth: true, timeoutMs: 60000 };
  try {
    return await request(method, path, options);
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 401 || !askToken) throw error;
    const entered = await askToken(error.message);
    if (!entered) throw error;
    setToken(entered);
    return request(method, path, options);
  }
}

/**
 * Live events (`/api/events`, SSE). Calls `handlers.graph(data)`,
 * `handlers.modes(data)`, `handlers.state(connected)`. EventSource
 * reconnects by itself; when the endpoint is missing the caller polls.
 */
export function subscribe(handlers) {
  if (typeof EventSource === 'undefined') { handlers.state(false); return () => {}; }
  const source = new EventSource('/api/events');
  source.addEventListener('open', () => handlers.state(true));
  source.addEventListener('error', () => handlers.state(false));
  for (const name of ['graph', 'modes']) {
    source.addEventListener(name, (event) => {
      let data = null;
      try { data = JSON.parse(event.data); } catch { return; }
      handlers[name]?.(data);
    });
  }
  return () => source.close();
}

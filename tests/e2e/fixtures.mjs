// A synthetic flow graph of the shape /api/graph answers: `namespaces` x
// `perNamespace` workloads plus external addresses, `edges` distinct
// edges with a mix of ports and verdicts. Deterministic (seeded).

export function syntheticGraph({ namespaces = 24, perNamespace = 20, externals = 20, edges = 5000, seed = 7 } = {}) {
  let state = seed;
  const random = () => { state = (state * 1103515245 + 12345) % 2147483648; return state / 2147483648; };
  const now = Date.now();
  const iso = (ago) => new Date(now - ago).toISOString();
  const nodes = [];
  for (let n = 0; n < namespaces; n += 1) {
    for (let w = 0; w < perNamespace; w += 1) {
      const ns = `team-${String(n).padStart(2, '0')}`;
      const name = `svc-${String(w).padStart(2, '0')}`;
      nodes.push({ id: `${ns}/${name}`, kind: 'workload', group: ns, name, namespace: ns, workload: name, labels: { app: name }, pods: [`${name}-0`], mode: 'observe' });
    }
  }
  for (let e = 0; e < externals; e += 1) {
    const ip = `198.51.100.${e + 1}`;
    nodes.push({ id: ip, kind: 'external', group: 'external', name: ip, labels: {}, pods: [] });
  }
  const workloads = nodes.filter((n) => n.kind === 'workload');
  const seen = new Set();
  const list = [];
  const verdicts = ['forwarded', 'forwarded', 'forwarded', 'forwarded', 'audit', 'dropped'];
  while (list.length < edges) {
    const source = workloads[Math.floor(random() * workloads.length)];
    // Mostly within the namespace, like real services.
    const local = random() < 0.6;
    const pool = local ? workloads.filter((w) => w.group === source.group) : nodes;
    const target = pool[Math.floor(random() * pool.length)];
    const id = `${source.id}->${target.id}`;
    if (source.id === target.id || seen.has(id)) continue;
    seen.add(id);
    const port = [80, 443, 8080, 5432, 6379, 9090, 53][Math.floor(random() * 7)];
    const protocol = port === 53 ? 'UDP' : 'TCP';
    const verdict = verdicts[Math.floor(random() * verdicts.length)];
    const connections = 1 + Math.floor(random() * 500);
    const first = iso(3600e3), last = iso(random() * 600e3);
    list.push({
      id, source: source.id, target: target.id, verdict,
      ports: [{ port, protocol, connections, packets: connections * 10, bytes: connections * 1500, first_seen: first, last_seen: last, verdicts: { forwarded: verdict === 'forwarded' ? connections : 0, audit: verdict === 'audit' ? connections : 0, dropped: verdict === 'dropped' ? connections : 0 } }],
      packets: connections * 10, bytes: connections * 1500, connections, first_seen: first, last_seen: last,
    });
  }
  return { version: 1, generated_at: new Date(now).toISOString(), nodes, edges: list };
}

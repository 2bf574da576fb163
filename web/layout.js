// A deterministic layered layout for the flow graph, pure (no DOM) so it
// runs in a Web Worker. Traffic reads left to right: each group
// (namespace, or "external") is a box placed in the column of its rank in
// the graph of groups; inside a box, workloads sit in columns by their rank
// among the group's own edges. O(V + E) plus sorting: 500 nodes and 5,000
// edges take milliseconds, and the same graph always gets the same picture.

export const COL_W = 250; // one column of workloads, room for edge labels
export const ROW_H = 62;
const GAP_X = 150; // between group columns
const GAP_Y = 80; // between stacked groups (their labels sit above)

/**
 * Longest-path layer of each id, after dropping the edges that close a
 * cycle (found by an iterative depth-first search in id order).
 */
export function ranks(ids, edges) {
  const out = new Map(ids.map((id) => [id, []]));
  for (const { source, target } of edges) {
    if (source !== target && out.has(source) && out.has(target)) out.get(source).push(target);
  }
  for (const list of out.values()) list.sort();
  const state = new Map(); // 1: on the stack, 2: done
  const dag = new Map(ids.map((id) => [id, []]));
  for (const root of [...ids].sort()) {
    if (state.has(root)) continue;
    const stack = [[root, 0]];
    state.set(root, 1);
    while (stack.length) {
      const top = stack[stack.length - 1];
      const [node, i] = top;
      const next = out.get(node)[i];
      if (next === undefined) { state.set(node, 2); stack.pop(); continue; }
      top[1] += 1;
      const s = state.get(next);
      if (s === 1) continue; // back edge: breaks a cycle
      dag.get(node).push(next);
      if (s === undefined) { state.set(next, 1); stack.push([next, 0]); }
    }
  }
  const indegree = new Map(ids.map((id) => [id, 0]));
  for (const targets of dag.values()) for (const t of targets) indegree.set(t, indegree.get(t) + 1);
  const rank = new Map(ids.map((id) => [id, 0]));
  const queue = ids.filter((id) => indegree.get(id) === 0).sort();
  for (let i = 0; i < queue.length; i += 1) {
    const node = queue[i];
    for (const t of dag.get(node)) {
      rank.set(t, Math.max(rank.get(t), rank.get(node) + 1));
      indegree.set(t, indegree.get(t) - 1);
      if (indegree.get(t) === 0) queue.push(t);
    }
  }
  return rank;
}

function byKeyThenId(key) {
  return (a, b) => (key.get(a) - key.get(b)) || (a < b ? -1 : a > b ? 1 : 0);
}

/** The columns of one group: lists of node ids, wrapped to `maxRows`. */
function groupColumns(ids, edges) {
  const rank = ranks(ids, edges);
  const byRank = new Map();
  for (const id of [...ids].sort()) {
    const r = rank.get(id);
    if (!byRank.has(r)) byRank.set(r, []);
    byRank.get(r).push(id);
  }
  const maxRows = Math.max(5, Math.ceil(Math.sqrt(ids.length) * 1.4));
  const preds = new Map(ids.map((id) => [id, []]));
  for (const { source, target } of edges) preds.get(target)?.push(source);
  const row = new Map();
  const columns = [];
  for (const r of [...byRank.keys()].sort((a, b) => a - b)) {
    const members = byRank.get(r);
    // Barycenter of the predecessors already placed: fewer crossings.
    const key = new Map(members.map((id) => {
      const placed = preds.get(id).filter((p) => row.has(p)).map((p) => row.get(p));
      return [id, placed.length ? placed.reduce((a, b) => a + b, 0) / placed.length : Infinity];
    }));
    members.sort(byKeyThenId(key));
    for (let i = 0; i < members.length; i += maxRows) {
      const column = members.slice(i, i + maxRows);
      column.forEach((id, j) => row.set(id, j));
      columns.push(column);
    }
  }
  return columns;
}

/**
 * Positions of every node: `nodes` [{id, group}], `edges` [{source, target}]
 * -> {id: {x, y}}.
 */
export function layout(nodes, edges) {
  const groupOf = new Map(nodes.map((n) => [n.id, n.group]));
  const groups = [...new Set(nodes.map((n) => n.group))].sort();
  const members = new Map(groups.map((g) => [g, []]));
  for (const n of nodes) members.get(n.group).push(n.id);
  const inner = new Map(groups.map((g) => [g, []]));
  const between = [];
  for (const e of edges) {
    const gs = groupOf.get(e.source);
    const gt = groupOf.get(e.target);
    if (gs === undefined || gt === undefined) continue;
    if (gs === gt) inner.get(gs).push(e);
    else between.push({ source: gs, target: gt });
  }

  const boxes = new Map();
  for (const g of groups) {
    const columns = groupColumns(members.get(g), inner.get(g));
    const rows = Math.max(...columns.map((c) => c.length));
    boxes.set(g, { columns, width: columns.length * COL_W, height: rows * ROW_H });
  }

  const groupRank = ranks(groups, between);
  const byColumn = new Map();
  for (const g of groups) {
    const r = groupRank.get(g);
    if (!byColumn.has(r)) byColumn.set(r, []);
    byColumn.get(r).push(g);
  }
  const groupPreds = new Map(groups.map((g) => [g, []]));
  for (const { source, target } of between) groupPreds.get(target).push(source);

  const centreY = new Map();
  const positions = {};
  let x = 0;
  for (const r of [...byColumn.keys()].sort((a, b) => a - b)) {
    const column = byColumn.get(r);
    const key = new Map(column.map((g) => {
      const placed = groupPreds.get(g).filter((p) => centreY.has(p)).map((p) => centreY.get(p));
      return [g, placed.length ? placed.reduce((a, b) => a + b, 0) / placed.length : -Infinity];
    }));
    column.sort(byKeyThenId(key));
    let y = 0;
    let width = 0;
    for (const g of column) {
      const box = boxes.get(g);
      box.columns.forEach((ids, c) => {
        const offset = (box.height - ids.length * ROW_H) / 2; // centre short columns
        ids.forEach((id, i) => {
          positions[id] = { x: x + c * COL_W + COL_W / 2, y: y + offset + i * ROW_H + ROW_H / 2 };
        });
      });
      centreY.set(g, y + box.height / 2);
      y += box.height + GAP_Y;
      width = Math.max(width, box.width);
    }
    x += width + GAP_X;
  }
  return positions;
}

/**
 * Places `added` nodes next to what is already placed without moving
 * anything: beside a predecessor of its group, under the last node of that
 * column, or for a new group, in a new column on the right.
 * `positions` (id -> {x, y}) is extended in place and returned.
 */
export function placeNew(added, nodes, edges, positions) {
  const groupOf = new Map(nodes.map((n) => [n.id, n.group]));
  const preds = new Map();
  for (const { source, target } of edges) {
    if (!preds.has(target)) preds.set(target, []);
    preds.get(target).push(source);
  }
  const placed = Object.keys(positions);
  let maxX = placed.length ? Math.max(...placed.map((id) => positions[id].x)) : -COL_W;
  let minY = placed.length ? Math.min(...placed.map((id) => positions[id].y)) : 0;
  const order = [...added].sort((a, b) => (a.id < b.id ? -1 : 1));
  const newGroupX = new Map();
  for (const node of order) {
    const siblings = Object.keys(positions).filter((id) => groupOf.get(id) === node.group);
    let x;
    let y;
    if (siblings.length) {
      const inGroupPreds = (preds.get(node.id) || [])
        .filter((p) => groupOf.get(p) === node.group && positions[p]);
      x = inGroupPreds.length
        ? Math.max(...inGroupPreds.map((p) => positions[p].x)) + COL_W
        : Math.min(...siblings.map((id) => positions[id].x));
      const sameColumn = siblings.filter((id) => Math.abs(positions[id].x - x) < COL_W / 2);
      y = sameColumn.length
        ? Math.max(...sameColumn.map((id) => positions[id].y)) + ROW_H
        : Math.min(...siblings.map((id) => positions[id].y));
    } else {
      if (!newGroupX.has(node.group)) {
        newGroupX.set(node.group, maxX + COL_W / 2 + GAP_X + COL_W / 2);
      }
      x = newGroupX.get(node.group);
      y = minY;
    }
    positions[node.id] = { x, y };
    maxX = Math.max(maxX, x);
    minY = Math.min(minY, y);
  }
  return positions;
}

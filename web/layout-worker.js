// Runs the layout off the main thread: {seq, nodes, edges} -> {seq, positions, ms}.
import { layout } from './layout.js';

self.addEventListener('message', (event) => {
  const { seq, nodes, edges } = event.data;
  const started = performance.now();
  const positions = layout(nodes, edges);
  self.postMessage({ seq, positions, ms: performance.now() - started });
});

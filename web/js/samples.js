// Progress samples of tasks as this tab observed them (list refreshes and the
// detail page's stream), kept in sessionStorage so the detail chart shows the
// history seen so far, not just since the page was opened.

const MAX_SAMPLES = 2000;
const key = (id) => `prewarm.samples.${id}`;

/** Samples [{t, completed, failed}] recorded for a task. */
export function loadSamples(id) {
  try { return JSON.parse(sessionStorage.getItem(key(id)) || '[]'); } catch { return []; }
}

/** Records a task's progress at time `when` unless nothing changed in the last 5 s. */
export function recordSample(id, progress, when = Date.now()) {
  const samples = loadSamples(id);
  const last = samples[samples.length - 1];
  if (last && last.completed === progress.completedNodes && last.failed === progress.failedNodes && when - last.t < 5000) return samples;
  samples.push({ t: when, completed: progress.completedNodes, failed: progress.failedNodes });
  try { sessionStorage.setItem(key(id), JSON.stringify(samples.slice(-MAX_SAMPLES))); } catch { /* storage full: the chart shows less */ }
  return samples;
}

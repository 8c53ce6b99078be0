// A small inline-SVG chart of a task's completed (and failed) nodes over time.

import { s } from './dom.js';
import { fmtDuration } from './format.js';

const H = 200;
const PAD = { left: 44, right: 12, top: 12, bottom: 30 };

/**
 * samples: [{t: ms since epoch, completed, failed}], total: node count,
 * width: the drawing's width in CSS pixels (text stays at its real size).
 * Returns an <svg> with a title and description for screen readers.
 */
export function progressChart(samples, total, width = 640) {
  const W = Math.max(280, Math.round(width));
  const points = [...samples].sort((a, b) => a.t - b.t);
  const t0 = points.length ? points[0].t : 0;
  const t1 = points.length ? points[points.length - 1].t : 1;
  const span = Math.max(1, t1 - t0);
  const yMax = Math.max(1, total || 0, ...points.map((p) => p.completed + p.failed));
  const x = (t) => PAD.left + ((t - t0) / span) * (W - PAD.left - PAD.right);
  const y = (v) => H - PAD.bottom - (v / yMax) * (H - PAD.top - PAD.bottom);
  const line = (key) => {
    // Straight lines between observations: what happened in between was not seen.
    return points.map((p) => `${x(p.t).toFixed(1)},${y(p[key]).toFixed(1)}`).join(' ');
  };
  const last = points[points.length - 1] || { completed: 0, failed: 0 };
  const desc = `${last.completed} of ${total} nodes completed, ${last.failed} failed, over ${fmtDuration(span / 1000)}`;
  const ticks = [0, Math.round(yMax / 2), yMax];
  return s('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-labelledby': 'chart-title chart-desc' },
    s('title', { id: 'chart-title' }, 'Completed nodes over time'),
    s('desc', { id: 'chart-desc' }, desc),
    ticks.map((v) => [
      s('line', { class: 'grid', x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v) }),
      s('text', { class: 'axis', x: PAD.left - 6, y: y(v) + 4, 'text-anchor': 'end' }, String(v)),
    ]),
    s('text', { class: 'axis', x: PAD.left, y: H - 8 }, '0s'),
    s('text', { class: 'axis', x: W - PAD.right, y: H - 8, 'text-anchor': 'end' }, fmtDuration(span / 1000)),
    points.map((p) => s('circle', { class: 'sample', cx: x(p.t).toFixed(1), cy: y(p.completed).toFixed(1), r: 2.5 })),
    points.length > 0 && s('polyline', { class: 'series-completed', points: line('completed') }),
    points.some((p) => p.failed > 0) && s('polyline', { class: 'series-failed', points: line('failed') }),
  );
}

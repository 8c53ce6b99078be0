// Nodes: what the service has learned about each node's pull speed
// (GET /api/v1/nodes/stats), slowest first — the nodes every task starts
// first. A bar shows each node's seconds per pull against the slowest listed;
// nodes gone from the cluster say since when (their speed is forgotten after
// --retention). How many are listed lives in the URL (#/nodes?limit=100).

import { api, isMissingRoute } from '../api.js';
import { h, replace } from '../dom.js';
import { fmtTime } from '../format.js';
import { errorBox } from '../widgets.js';

const LIMITS = [20, 100, 1000];

/** "0.84 s", "12.5 s", "2m 05s" for seconds per pull. */
export function fmtSeconds(s) {
  if (s === null || s === undefined) return '—';
  if (s >= 120) return `${Math.floor(s / 60)}m ${String(Math.round(s % 60)).padStart(2, '0')}s`;
  return `${s < 10 ? s.toFixed(2) : s.toFixed(1)} s`;
}

export function render(root, { params }, ctx) {
  const wanted = Number(params.get('limit'));
  const limit = LIMITS.includes(wanted) ? wanted : LIMITS[0];
  const select = h('select', { id: 'nodes-limit', name: 'limit', on: { change: () => ctx.navigate(`#/nodes?limit=${select.value}`) } },
    LIMITS.map((n) => h('option', { value: String(n), selected: n === limit }, `${n} slowest`)));
  const result = h('section', { id: 'nodes-result', 'aria-live': 'polite' });
  const refresh = h('button', { type: 'button', class: 'btn', id: 'nodes-refresh', on: { click: () => show(result, limit) } }, 'Refresh');
  root.append(
    h('div', { class: 'page-head' }, h('h1', {}, 'Nodes'),
      h('div', { class: 'nodes-controls' }, h('label', { for: 'nodes-limit' }, 'Show'), select, refresh)),
    h('p', { class: 'muted' }, 'Learned pull speeds: each node\'s measured seconds per image pull, recent pulls weighing most. Tasks start the slowest nodes first, and their ETAs count these speeds.'),
    result);
  show(result, limit);
}

async function show(result, limit) {
  replace(result, h('p', { class: 'muted' }, 'Loading…'));
  try {
    const stats = await api.nodeStats({ limit });
    replace(result, stats.nodes.length ? table(stats) : h('p', { class: 'muted', id: 'nodes-empty' }, 'No node speeds learned yet: they come with the first pulls.'));
  } catch (e) {
    replace(result, isMissingRoute(e)
      ? h('p', { class: 'error-box', role: 'alert' }, 'This server does not learn node speeds yet.')
      : errorBox(e));
  }
}

function table(stats) {
  const slowest = stats.nodes[0].secondsPerPull || 1;
  return h('div', {},
    h('p', { id: 'nodes-total' }, `${stats.nodes.length} of ${stats.total} nodes with a learned pull speed, slowest first.`),
    h('table', { class: 'table', id: 'nodes-table' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Node'), h('th', {}, 'Seconds per pull'), h('th', {}, 'Relative'),
        h('th', {}, 'Samples'), h('th', {}, 'Last measured'), h('th', {}, 'In the cluster'))),
      h('tbody', {}, stats.nodes.map((n) => {
        const share = Math.max(0, Math.min(100, (100 * n.secondsPerPull) / slowest));
        const seg = h('span', { class: 'seg seg-speed' });
        seg.style.width = `${share}%`;
        return h('tr', { dataset: { node: n.node }, class: n.goneSince ? 'node-gone' : null },
          h('th', { scope: 'row' }, n.node),
          h('td', { class: 'num', dataset: { seconds: String(n.secondsPerPull) } }, fmtSeconds(n.secondsPerPull)),
          h('td', {}, h('div', { class: 'bar speed-bar', role: 'img', 'aria-label': `${Math.round(share)}% of the slowest listed` }, seg)),
          h('td', { class: 'num' }, String(n.samples)),
          h('td', {}, fmtTime(n.updatedAt)),
          h('td', {}, n.goneSince ? `gone since ${fmtTime(n.goneSince)}` : 'yes'));
      }))));
}

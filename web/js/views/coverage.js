// Coverage: how many of the matching nodes report each image. Up to
// GRID_LIMIT nodes it draws a nodes × images grid; beyond that a summary per
// value of a node label (groupBy), which stays readable at thousands of nodes.
// The query lives in the URL (#/coverage?images=…&selector=…&groupBy=…) so a
// view can be shared.

import { api } from '../api.js';
import { h, replace } from '../dom.js';
import { fmtPercent } from '../format.js';
import { errorBox } from '../widgets.js';

const GRID_LIMIT = 300;
const DEFAULT_GROUP = 'topology.kubernetes.io/zone';

export function render(root, { params }, ctx) {
  const images = h('input', { id: 'coverage-images', name: 'images', required: true, size: 60,
    placeholder: 'nginx:1.25, redis:7', value: params.get('images') || '' });
  const selector = h('input', { id: 'coverage-selector', name: 'selector', size: 30,
    placeholder: 'pool=web, zone=a', value: params.get('selector') || '' });
  const groupBy = h('input', { id: 'coverage-group', name: 'groupBy', size: 30,
    placeholder: DEFAULT_GROUP, value: params.get('groupBy') || '' });
  const result = h('section', { id: 'coverage-result', 'aria-live': 'polite' });
  const form = h('form', { class: 'form coverage-form', on: { submit: (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    q.set('images', images.value.trim());
    if (selector.value.trim()) q.set('selector', selector.value.trim());
    if (groupBy.value.trim()) q.set('groupBy', groupBy.value.trim());
    ctx.navigate(`#/coverage?${q}`);
  } } },
  h('label', { for: 'coverage-images' }, 'Images (comma-separated)'), images,
  h('label', { for: 'coverage-selector' }, 'Node selector (key=value, …)'), selector,
  h('label', { for: 'coverage-group' }, 'Summarize by label (for large pools)'), groupBy,
  h('div', { class: 'form-actions' }, h('button', { type: 'submit', class: 'btn btn-primary', id: 'coverage-show' }, 'Show coverage')));

  root.append(h('div', { class: 'page-head' }, h('h1', {}, 'Coverage')), form, result);
  if (params.get('images')) show(result, params);
}

async function show(result, params) {
  replace(result, h('p', { class: 'muted' }, 'Loading…'));
  try {
    const query = { images: params.get('images'), nodeSelector: params.get('selector') || undefined,
      groupBy: params.get('groupBy') || DEFAULT_GROUP };
    const c = await api.coverage(query);
    replace(result, summary(c), c.totalNodes <= GRID_LIMIT ? grid(c) : groups(c, query.groupBy));
  } catch (e) {
    replace(result, errorBox(e));
  }
}

function summary(c) {
  const notes = [];
  if (c.notReadyNodes) notes.push(`${c.notReadyNodes} matching nodes are not Ready and not counted.`);
  if (c.nodesAtImageCap) notes.push(`${c.nodesAtImageCap} nodes report 50 images, the kubelet's cap: an image may be there without being listed.`);
  return h('div', { class: 'coverage-summary' },
    h('p', { id: 'coverage-total' }, `${fmtPercent(c.percentage)} of (node, image) pairs present on ${c.totalNodes} Ready nodes.`),
    h('table', { class: 'table', id: 'coverage-images-table' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Image'), h('th', {}, 'Nodes'), h('th', {}, 'Coverage'))),
      h('tbody', {}, c.images.map((i) => h('tr', { dataset: { image: i.image } },
        h('td', {}, i.image), h('td', {}, `${i.nodesWithImage}/${c.totalNodes}`), h('td', {}, fmtPercent(i.percentage)))))),
    notes.map((n) => h('p', { class: 'muted' }, n)));
}

function grid(c) {
  return h('table', { class: 'table coverage-grid', id: 'coverage-grid' },
    h('thead', {}, h('tr', {}, h('th', {}, 'Node'), c.images.map((i) => h('th', { title: i.image }, i.image)))),
    h('tbody', {}, c.nodes.map((n) => {
      const missing = new Set(n.missing);
      return h('tr', { dataset: { node: n.nodeName } }, h('th', { scope: 'row' }, n.nodeName),
        c.images.map((i) => missing.has(i.image)
          ? h('td', { class: 'cell-missing', title: `${i.image} missing` }, '✗')
          : h('td', { class: 'cell-present', title: `${i.image} present` }, '✓')));
    })));
}

function groups(c, label) {
  return h('div', {},
    h('p', { class: 'muted' }, `${c.totalNodes} nodes: summarized by ${label}.`),
    h('table', { class: 'table', id: 'coverage-groups' },
      h('thead', {}, h('tr', {}, h('th', {}, label), h('th', {}, 'Warm nodes'), h('th', {}, 'Coverage'))),
      h('tbody', {}, c.groups.map((g) => h('tr', {},
        h('td', {}, g.value || '(none)'), h('td', {}, `${g.warmNodes}/${g.nodes}`), h('td', {}, fmtPercent(g.percentage)))))));
}

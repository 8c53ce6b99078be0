// Keep-warm: the policies keeping images on every matching node, with how
// warm their nodes are, the nodes still gated by their taint, their last run
// and an enabled switch. The list refetches every REFRESH_MS while visible.

import { api, isMissingRoute } from '../api.js';
import { h, replace } from '../dom.js';
import { fmtTime, fmtPercent } from '../format.js';
import { errorBox, pager, statusBadge } from '../widgets.js';

const REFRESH_MS = 2000;
const LIMIT = 10;

function unavailable(e) {
  return isMissingRoute(e)
    ? h('p', { class: 'error-box', role: 'alert' }, 'This server has no keep-warm API yet.')
    : errorBox(e);
}

function coverageCell(p) {
  const c = p.coverage;
  if (!c) return h('span', { class: 'muted' }, 'unknown');
  return h('div', { class: 'policy-coverage' },
    h('span', { class: 'policy-warm' }, `${c.warmNodes}/${c.totalNodes} nodes warm`),
    h('div', { class: 'muted' }, fmtPercent(c.percentage)),
    c.gatedNodes.length ? h('div', { class: 'policy-gated', title: c.gatedNodes.join(', ') },
      `${c.gatedNodes.length} still tainted ${p.removeTaint}`) : null);
}

function lastRunCell(p) {
  const run = p.lastRuns[0];
  if (!run) return h('span', { class: 'muted' }, 'none yet');
  return h('div', {},
    h('a', { href: `#/tasks/${encodeURIComponent(run.taskId)}` }, run.taskId), ' ',
    run.status ? statusBadge(run.status) : null,
    h('div', { class: 'muted' }, `${fmtTime(run.createdAt)} · ${run.nodes} nodes${run.failedNodes ? ` · ${run.failedNodes} failed` : ''}`));
}

function enabledSwitch(p, ctx, after) {
  const input = h('input', { type: 'checkbox', role: 'switch', class: 'enabled-toggle', id: `policy-enabled-${p.id}`, checked: p.enabled, disabled: !ctx.canMutate });
  input.addEventListener('change', async () => {
    input.disabled = true;
    try {
      if (input.checked) await api.enablePolicy(p.id); else await api.disablePolicy(p.id);
      ctx.notify(`${p.name} ${input.checked ? 'enabled' : 'disabled'}.`);
    } catch (e) {
      input.checked = !input.checked;
      ctx.notify(e.message, 'error');
    }
    input.disabled = !ctx.canMutate;
    after();
  });
  return h('span', { class: 'switch' }, input, h('label', { for: input.id }, p.enabled ? 'Enabled' : 'Disabled'));
}

export function render(root, { params }, ctx) {
  const offset = Math.max(0, Number.parseInt(params.get('offset') || '0', 10) || 0);
  const body = h('tbody');
  const errorSlot = h('div');
  const pagerBox = h('nav', { class: 'pager', 'aria-label': 'Pages' });
  const empty = h('p', { class: 'empty muted', hidden: true },
    'No keep-warm policies yet. Create one with the API or `prewarm keep-warm create`.');
  root.append(
    h('div', { class: 'page-head' }, h('h1', {}, 'Keep-warm policies')),
    errorSlot, empty,
    h('div', { class: 'table-wrap' }, h('table', { id: 'policy-table', class: 'policies' },
      h('thead', {}, h('tr', {}, ['Name', 'Images', 'Nodes', 'Coverage', 'Last run', 'Enabled'].map((t) => h('th', { scope: 'col' }, t)))),
      body)),
    pagerBox);
  let stopped = false;
  let timer = null;
  const refresh = async () => {
    try {
      const page = await api.listPolicies({ limit: LIMIT, offset });
      replace(errorSlot);
      replace(body, page.policies.map((p) => h('tr', { 'data-policy-id': p.id, 'data-name': p.name },
        h('th', { scope: 'row' }, p.name, h('div', { class: 'muted' }, p.id)),
        h('td', {}, p.images.map((i) => h('div', {}, h('code', {}, i))),
          p.fromWorkload ? h('div', { class: 'muted' }, `+ ${p.fromWorkload.kind} ${p.fromWorkload.namespace}/${p.fromWorkload.name}`) : null),
        h('td', {}, Object.keys(p.nodeSelector).length
          ? Object.entries(p.nodeSelector).map(([k, v]) => h('div', {}, h('code', {}, `${k}=${v}`)))
          : h('span', { class: 'muted' }, 'all nodes')),
        h('td', {}, coverageCell(p)),
        h('td', {}, lastRunCell(p)),
        h('td', {}, enabledSwitch(p, ctx, refresh)))));
      empty.hidden = page.policies.length > 0;
      pager(pagerBox, page, (off) => ctx.navigate(`#/keep-warm${off ? `?offset=${off}` : ''}`));
    } catch (e) {
      replace(errorSlot, unavailable(e));
    }
  };
  const tick = async () => {
    if (!document.hidden && !document.querySelector('dialog[open]')) await refresh();
    if (!stopped) timer = setTimeout(tick, REFRESH_MS);
  };
  tick();
  return () => { stopped = true; clearTimeout(timer); };
}

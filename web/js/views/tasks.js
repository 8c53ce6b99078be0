// Tasks: the live list, newest first, with a status filter and paging.
// It refetches the current page every REFRESH_MS while the tab is visible
// (one small request per interval for a whole page, instead of a stream per
// task); cards are updated in place so focus and scroll stay put.

import { api } from '../api.js';
import { recordSample } from '../samples.js';
import { h, replace } from '../dom.js';
import { fmtTime, fmtDuration, fmtRelative, fmtPercent, secondsBetween, successRate, isActive } from '../format.js';
import { statusBadge, progressBar, updateProgressBar, nodeCounts, pager, errorBox, confirmDialog } from '../widgets.js';

const REFRESH_MS = 1500;
const LIMIT = 10;
const STATUSES = ['pending', 'running', 'completed', 'failed', 'cancelled'];

export function render(root, { params }, ctx) {
  const status = STATUSES.includes(params.get('status')) ? params.get('status') : '';
  const offset = Math.max(0, Number.parseInt(params.get('offset') || '0', 10) || 0);
  const go = (st, off) => {
    const q = new URLSearchParams();
    if (st) q.set('status', st);
    if (off) q.set('offset', String(off));
    ctx.navigate(`#/tasks${q.toString() ? `?${q}` : ''}`);
  };

  const filter = h('select', { id: 'status-filter', on: { change: () => go(filter.value, 0) } },
    h('option', { value: '' }, 'All statuses'),
    STATUSES.map((st) => h('option', { value: st, selected: st === status }, st)));
  const list = h('ol', { class: 'task-list', 'aria-label': 'Tasks', 'aria-busy': 'true' });
  const pagerBox = h('nav', { class: 'pager', 'aria-label': 'Pages' });
  const errorSlot = h('div');
  const empty = h('p', { class: 'empty muted', hidden: true }, status ? `No ${status} tasks.` : 'No tasks yet.');

  root.append(
    h('div', { class: 'page-head' },
      h('h1', {}, 'Tasks'),
      h('div', { class: 'toolbar' },
        h('label', { for: 'status-filter' }, 'Status'), filter,
        ctx.canMutate ? h('a', { href: '#/tasks/new', class: 'btn btn-primary', id: 'new-task' }, '+ New task') : null)),
    errorSlot, empty, list, pagerBox);

  const cards = new Map();
  let timer = null;
  let stopped = false;

  async function refresh() {
    try {
      const page = await api.listTasks({ status, limit: LIMIT, offset });
      if (stopped) return;
      replace(errorSlot);
      if (offset > 0 && page.tasks.length === 0 && page.total > 0) { go(status, Math.max(0, page.total - LIMIT)); return; }
      const seen = new Set();
      page.tasks.forEach((task, i) => {
        seen.add(task.taskId);
        let card = cards.get(task.taskId);
        if (!card) { card = taskCard(ctx, refresh); cards.set(task.taskId, card); }
        card.update(task);
        if (isActive(task.status)) recordSample(task.taskId, task.progress);
        if (list.children[i] !== card.el) list.insertBefore(card.el, list.children[i] || null);
      });
      for (const [id, card] of cards) if (!seen.has(id)) { card.el.remove(); cards.delete(id); }
      empty.hidden = page.tasks.length > 0;
      list.setAttribute('aria-busy', 'false');
      pager(pagerBox, page, (off) => go(status, off));
    } catch (e) {
      if (!stopped) replace(errorSlot, errorBox(e));
    }
  }

  const tick = async () => {
    if (!document.hidden) await refresh();
    if (!stopped) timer = setTimeout(tick, REFRESH_MS);
  };
  tick();
  return () => { stopped = true; clearTimeout(timer); };
}

/** One task's card; update(task) rewrites its fields in place. */
function taskCard(ctx, refresh) {
  const link = h('a', { class: 'task-id' });
  const badge = h('span');
  const percent = h('span', { class: 'percent' });
  const bar = progressBar();
  const counts = h('span', { class: 'counts' });
  const images = h('span', { class: 'images' });
  const started = h('span');
  const timing = h('span');
  const rate = h('span');
  const actions = h('span', { class: 'card-actions' });
  const el = h('li', { class: 'card task-card' },
    h('div', { class: 'card-head' }, link, badge, percent, actions),
    bar,
    h('div', { class: 'card-meta' }, counts, images),
    h('div', { class: 'card-meta muted' }, started, timing, rate));
  let current = null;

  const cancelButton = h('button', { type: 'button', class: 'btn btn-small btn-danger', on: { click: async () => {
    if (!current) return;
    const ok = await confirmDialog({ title: 'Cancel task?', message: `Stop ${current.taskId}? Pulls in progress are stopped and its Jobs deleted.`, confirmLabel: 'Cancel task' });
    if (!ok) return;
    try {
      await api.cancelTask(current.taskId);
      ctx.notify(`${current.taskId} cancelled.`);
      refresh();
    } catch (e) { ctx.notify(e.message, 'error'); }
  } } }, 'Cancel');

  function update(task) {
    current = task;
    const p = task.progress;
    link.textContent = task.taskId;
    link.href = `#/tasks/${encodeURIComponent(task.taskId)}`;
    el.dataset.taskId = task.taskId;
    el.dataset.status = task.status;
    replace(badge, statusBadge(task.status));
    percent.textContent = fmtPercent(p.percentage);
    updateProgressBar(bar, p);
    counts.textContent = nodeCounts(p);
    const shown = task.images.slice(0, 3).join(', ');
    images.textContent = task.images.length > 3 ? `${shown} +${task.images.length - 3} more` : shown;
    images.title = task.images.join('\n');
    started.textContent = task.startedAt ? `Started ${fmtTime(task.startedAt)}` : `Created ${fmtTime(task.createdAt)}`;
    if (task.finishedAt) timing.textContent = `Took ${fmtDuration(secondsBetween(task.startedAt || task.createdAt, task.finishedAt))}`;
    else if (task.estimatedCompletion) timing.textContent = `ETA ${fmtTime(task.estimatedCompletion)} (${fmtRelative(task.estimatedCompletion)})`;
    else timing.textContent = task.status === 'running' ? 'ETA —' : '';
    const r = successRate(p);
    rate.textContent = r === null ? '' : `Success ${fmtPercent(r)}`;
    replace(actions, ctx.canMutate && isActive(task.status) ? cancelButton : null);
  }
  return { el, update };
}

// Schedules: scheduled tasks with their cron in words, next/last run, an
// enabled switch, trigger now, edit, delete; one schedule's executions with
// links to their tasks. Lists refetch every REFRESH_MS while visible.

import { api, ApiError, isMissingRoute } from '../api.js';
import { h, replace } from '../dom.js';
import { describeCron, cronError } from '../cron.js';
import { fmtTime, fmtDuration, fmtRelative } from '../format.js';
import { errorBox, pager, confirmDialog, facts } from '../widgets.js';
import { taskFields } from './new-task.js';

const REFRESH_MS = 2000;
const LIMIT = 10;

export function render(root, { match, params }, ctx) {
  const [id, edit] = match;
  if (id === 'new') return renderForm(root, null, ctx);
  if (id && edit) return renderForm(root, decodeURIComponent(id), ctx);
  if (id) return renderDetail(root, decodeURIComponent(id), params, ctx);
  return renderList(root, params, ctx);
}

function unavailable(e) {
  return isMissingRoute(e)
    ? h('p', { class: 'error-box', role: 'alert' }, 'This server has no scheduled tasks API yet.')
    : errorBox(e);
}

/** Poll fn every REFRESH_MS while the tab is visible; returns the stop function. */
function every(fn) {
  let stopped = false;
  let timer = null;
  const tick = async () => {
    if (!document.hidden) await fn();
    if (!stopped) timer = setTimeout(tick, REFRESH_MS);
  };
  tick();
  return () => { stopped = true; clearTimeout(timer); };
}

function cronCell(s) {
  return h('div', { class: 'cron' },
    h('code', {}, s.cronExpr),
    h('div', { class: 'muted cron-words' }, describeCron(s.cronExpr, s.timezone || 'UTC')));
}

function enabledSwitch(s, ctx, after) {
  const input = h('input', { type: 'checkbox', role: 'switch', class: 'enabled-toggle', id: `enabled-${s.id}`, checked: s.enabled, disabled: !ctx.canMutate });
  input.addEventListener('change', async () => {
    input.disabled = true;
    try {
      if (input.checked) await api.enableSchedule(s.id); else await api.disableSchedule(s.id);
      ctx.notify(`${s.name} ${input.checked ? 'enabled' : 'disabled'}.`);
    } catch (e) {
      input.checked = !input.checked;
      ctx.notify(e.message, 'error');
    }
    input.disabled = !ctx.canMutate;
    after();
  });
  return h('span', { class: 'switch' }, input, h('label', { for: input.id }, s.enabled ? 'Enabled' : 'Disabled'));
}

async function trigger(s, ctx, after) {
  try {
    const res = await api.triggerSchedule(s.id);
    ctx.notify(`${s.name} triggered: task ${res.taskId}.`);
  } catch (e) { ctx.notify(e.message, 'error'); }
  after();
}

async function remove(s, ctx, after) {
  const ok = await confirmDialog({ title: 'Delete schedule?', message: `Delete "${s.name}"? Tasks it already started are kept.`, confirmLabel: 'Delete' });
  if (!ok) return;
  try {
    await api.deleteSchedule(s.id);
    ctx.notify(`${s.name} deleted.`);
  } catch (e) { ctx.notify(e.message, 'error'); }
  after();
}

function actionsFor(s, ctx, after, { withView = true } = {}) {
  return h('div', { class: 'row-actions' },
    withView ? h('a', { class: 'btn btn-small', href: `#/schedules/${encodeURIComponent(s.id)}` }, 'Executions') : null,
    ctx.canMutate ? [
      h('button', { type: 'button', class: 'btn btn-small trigger', on: { click: () => trigger(s, ctx, after) } }, 'Trigger now'),
      h('a', { class: 'btn btn-small edit', href: `#/schedules/${encodeURIComponent(s.id)}/edit` }, 'Edit'),
      ctx.canAdmin ? h('button', { type: 'button', class: 'btn btn-small btn-danger delete', on: { click: () => remove(s, ctx, after) } }, 'Delete') : null,
    ] : null);
}

function renderList(root, params, ctx) {
  const offset = Math.max(0, Number.parseInt(params.get('offset') || '0', 10) || 0);
  const body = h('tbody');
  const errorSlot = h('div');
  const pagerBox = h('nav', { class: 'pager', 'aria-label': 'Pages' });
  const empty = h('p', { class: 'empty muted', hidden: true }, 'No schedules yet.');
  root.append(
    h('div', { class: 'page-head' }, h('h1', {}, 'Schedules'),
      ctx.canMutate ? h('a', { href: '#/schedules/new', class: 'btn btn-primary', id: 'new-schedule' }, '+ New schedule') : null),
    errorSlot, empty,
    h('div', { class: 'table-wrap' }, h('table', { id: 'schedule-table', class: 'schedules' },
      h('thead', {}, h('tr', {}, ['Name', 'Schedule', 'Next run', 'Last run', 'Enabled', 'Actions'].map((t) => h('th', { scope: 'col' }, t)))),
      body)),
    pagerBox);
  let busy = false;
  const refresh = async () => {
    // Don't rebuild rows under an open dialog or a button being pressed.
    if (busy || document.querySelector('dialog[open]')) return;
    busy = true;
    try {
      const page = await api.listSchedules({ limit: LIMIT, offset });
      replace(errorSlot);
      const focusedId = document.activeElement && document.activeElement.closest('tr') && document.activeElement.closest('tr').dataset.scheduleId;
      const focusedClass = document.activeElement && document.activeElement.className;
      replace(body, page.tasks.map((s) => h('tr', { 'data-schedule-id': s.id, 'data-name': s.name },
        h('th', { scope: 'row' }, h('a', { href: `#/schedules/${encodeURIComponent(s.id)}` }, s.name), s.description ? h('div', { class: 'muted' }, s.description) : null),
        h('td', {}, cronCell(s)),
        h('td', {}, s.nextExecutionAt ? [fmtTime(s.nextExecutionAt), h('div', { class: 'muted' }, fmtRelative(s.nextExecutionAt))] : h('span', { class: 'muted' }, s.enabled ? '—' : 'paused')),
        h('td', {}, s.lastExecutionAt ? fmtTime(s.lastExecutionAt) : h('span', { class: 'muted' }, 'never')),
        h('td', {}, enabledSwitch(s, ctx, refresh)),
        h('td', {}, actionsFor(s, ctx, refresh)))));
      if (focusedId) {
        const again = body.querySelector(`tr[data-schedule-id="${CSS.escape(focusedId)}"] [class="${CSS.escape(focusedClass)}"]`);
        if (again) again.focus();
      }
      empty.hidden = page.tasks.length > 0;
      pager(pagerBox, page, (off) => ctx.navigate(`#/schedules${off ? `?offset=${off}` : ''}`));
    } catch (e) {
      replace(errorSlot, unavailable(e));
    } finally { busy = false; }
  };
  return every(refresh);
}

function execStatus(status) {
  return h('span', { class: ['badge', `exec-${status}`], 'data-status': status }, status);
}

function renderDetail(root, id, params, ctx) {
  const offset = Math.max(0, Number.parseInt(params.get('offset') || '0', 10) || 0);
  const title = h('h1', {}, id);
  const info = h('div');
  const actions = h('div');
  const body = h('tbody');
  const errorSlot = h('div');
  const pagerBox = h('nav', { class: 'pager', 'aria-label': 'Pages' });
  root.append(
    h('p', { class: 'crumbs' }, h('a', { href: '#/schedules' }, '← Schedules')),
    h('div', { class: 'page-head' }, title, actions),
    errorSlot,
    h('section', { class: 'card' }, info),
    h('section', { class: 'card', 'aria-labelledby': 'exec-title' },
      h('h2', { id: 'exec-title' }, 'Executions'),
      h('div', { class: 'table-wrap' }, h('table', { id: 'execution-table' },
        h('thead', {}, h('tr', {}, ['#', 'Trigger', 'Status', 'Triggered', 'Duration', 'Task', 'Error'].map((t) => h('th', { scope: 'col' }, t)))),
        body)),
      pagerBox));
  let gone = false;
  const refresh = async () => {
    if (gone || document.querySelector('dialog[open]')) return;
    try {
      const [s, page] = await Promise.all([api.getSchedule(id), api.listExecutions(id, { limit: LIMIT, offset })]);
      replace(errorSlot);
      title.textContent = s.name;
      const cfg = s.taskConfig || {};
      replace(actions, h('div', { class: 'toolbar' }, enabledSwitch(s, ctx, refresh), actionsFor(s, ctx, async () => {
        try { await api.getSchedule(id); refresh(); } catch { gone = true; ctx.navigate('#/schedules'); }
      }, { withView: false })));
      replace(info, facts([
        s.description && ['Description', s.description],
        ['Schedule', cronCell(s)],
        ['Time zone', s.timezone || 'UTC'],
        ['Next run', s.nextExecutionAt ? `${fmtTime(s.nextExecutionAt)} (${fmtRelative(s.nextExecutionAt)})` : (s.enabled ? '—' : 'paused')],
        ['Last run', fmtTime(s.lastExecutionAt)],
        ['Overlap policy', s.overlapPolicy || 'skip'],
        ['Timeout', s.timeoutSeconds ? fmtDuration(s.timeoutSeconds) : 'none'],
        ['Images', (cfg.images || []).join(', ')],
        ['Created', `${fmtTime(s.createdAt)} by ${s.createdBy || '—'}`],
      ]));
      replace(body, page.executions.length ? page.executions.map((x) => h('tr', { 'data-execution-id': String(x.id) },
        h('td', {}, String(x.id)),
        h('td', {}, x.trigger || 'schedule'),
        h('td', {}, execStatus(x.status)),
        h('td', {}, fmtTime(x.triggeredAt || x.startedAt)),
        h('td', {}, x.durationSeconds !== null && x.durationSeconds !== undefined ? fmtDuration(x.durationSeconds) : (x.status === 'running' ? 'running' : '—')),
        h('td', {}, x.taskId ? h('a', { class: 'mono', href: `#/tasks/${encodeURIComponent(x.taskId)}` }, x.taskId) : h('span', { class: 'muted' }, '—')),
        h('td', { class: 'message' }, x.errorMessage || '')))
        : h('tr', {}, h('td', { colspan: 7, class: 'muted' }, 'No executions yet.')));
      pager(pagerBox, page, (off) => ctx.navigate(`#/schedules/${encodeURIComponent(id)}?offset=${off}`));
    } catch (e) {
      if (e instanceof ApiError && e.status === 404 && !isMissingRoute(e)) { gone = true; replace(errorSlot, errorBox(e)); return; }
      replace(errorSlot, unavailable(e));
    }
  };
  return every(refresh);
}

function renderForm(root, id, ctx) {
  if (!ctx.canMutate) {
    root.appendChild(h('p', { class: 'error-box', role: 'alert' }, 'Your role may only read schedules.'));
    return undefined;
  }
  const box = h('div');
  root.append(h('p', { class: 'crumbs' }, h('a', { href: '#/schedules' }, '← Schedules')), box);
  let cancelled = false;
  (async () => {
    let existing = null;
    if (id) {
      try { existing = await api.getSchedule(id); } catch (e) { replace(box, unavailable(e)); return; }
    }
    if (!cancelled) buildForm(box, existing, ctx);
  })();
  return () => { cancelled = true; };
}

function textField(id, label, value, attrs = {}, hint = null) {
  const input = h('input', { id, type: 'text', value: value ?? '', autocomplete: 'off', ...attrs });
  const error = h('p', { id: `${id}-error`, class: 'field-error', 'aria-live': 'polite' });
  const hintEl = hint !== null ? h('p', { id: `${id}-hint`, class: 'hint', 'aria-live': 'polite' }, hint) : null;
  input.setAttribute('aria-describedby', [hintEl && hintEl.id, error.id].filter(Boolean).join(' '));
  return {
    el: h('div', { class: 'field' }, h('label', { for: id }, label), input, hintEl, error),
    input,
    hint: hintEl,
    setError(msg) { error.textContent = msg || ''; if (msg) input.setAttribute('aria-invalid', 'true'); else input.removeAttribute('aria-invalid'); },
  };
}

function buildForm(box, existing, ctx) {
  const s = existing || {};
  const name = textField('schedule-name', 'Name', s.name, { required: true });
  const description = textField('schedule-description', 'Description', s.description);
  const cron = textField('cron-expr', 'Cron expression', s.cronExpr || '0 0 * * *', { spellcheck: 'false' }, '');
  const tz = textField('timezone', 'Time zone (IANA name)', s.timezone || 'UTC', { spellcheck: 'false' });
  const overlap = h('select', { id: 'overlap-policy' }, ['skip', 'allow', 'queue'].map((o) => h('option', { value: o, selected: o === (s.overlapPolicy || 'skip') }, o)));
  const timeout = textField('schedule-timeout', 'Timeout (seconds, 0 = none)', String(s.timeoutSeconds ?? 0), { type: 'number', min: 0, step: 1 });
  const deadline = textField('starting-deadline', 'Starting deadline (seconds)', String(s.startingDeadlineSeconds ?? 0), { type: 'number', min: 0, step: 1 });
  const enabled = h('input', { id: 'schedule-enabled', type: 'checkbox', checked: s.enabled ?? true });
  const fields = taskFields(s.taskConfig || {});
  const formError = h('div');
  const describe = () => {
    const err = cronError(cron.input.value);
    cron.setError(err);
    cron.hint.textContent = err ? '' : describeCron(cron.input.value, tz.input.value.trim() || 'UTC');
    return !err;
  };
  cron.input.addEventListener('input', describe);
  tz.input.addEventListener('input', describe);
  describe();

  const submit = h('button', { type: 'submit', class: 'btn btn-primary', id: 'save-schedule' }, existing ? 'Save changes' : 'Create schedule');
  const form = h('form', { class: 'card form', novalidate: true, 'aria-labelledby': 'schedule-form-title' },
    h('h1', { id: 'schedule-form-title' }, existing ? `Edit ${s.name}` : 'New schedule'),
    h('div', { class: 'grid-2' }, name.el, description.el),
    h('div', { class: 'grid-2' }, cron.el, tz.el),
    h('div', { class: 'grid-3' },
      h('div', { class: 'field' }, h('label', { for: 'overlap-policy' }, 'If the last run is still going'), overlap),
      timeout.el, deadline.el),
    h('div', { class: 'field checkbox' }, enabled, h('label', { for: 'schedule-enabled' }, 'Enabled')),
    h('h2', {}, 'Task to run'),
    fields.el,
    formError,
    h('div', { class: 'actions' }, submit, h('a', { class: 'btn', href: existing ? `#/schedules/${encodeURIComponent(s.id)}` : '#/schedules' }, 'Cancel')));

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    replace(formError);
    let ok = describe();
    if (!name.input.value.trim()) { name.setError('a name is required'); ok = false; } else name.setError('');
    const { body: taskConfig, ok: taskOk } = fields.read();
    if (!ok || !taskOk) { (form.querySelector('[aria-invalid="true"]') || name.input).focus(); return; }
    const body = {
      name: name.input.value.trim(),
      description: description.input.value.trim(),
      cronExpr: cron.input.value.trim(),
      timezone: tz.input.value.trim() || 'UTC',
      enabled: enabled.checked,
      overlapPolicy: overlap.value,
      timeoutSeconds: Number(timeout.input.value) || 0,
      startingDeadlineSeconds: Number(deadline.input.value) || 0,
      taskConfig,
    };
    submit.disabled = true;
    try {
      const saved = existing ? await api.updateSchedule(s.id, body) : await api.createSchedule(body);
      ctx.notify(`${body.name} saved.`);
      ctx.navigate(`#/schedules/${encodeURIComponent(saved.id || s.id)}`);
    } catch (e) {
      submit.disabled = false;
      const m = /^([A-Za-z]+)/.exec(e.details || '');
      const map = { name, description, cronExpr: cron, timezone: tz, timeoutSeconds: timeout, startingDeadlineSeconds: deadline };
      if (m && map[m[1]]) map[m[1]].setError(e.details);
      else if (!(e instanceof ApiError) || !fields.showServerError(e.details)) replace(formError, errorBox(e));
      (form.querySelector('[aria-invalid="true"]') || submit).focus();
    }
  });
  replace(box, form);
  name.input.focus();
}

// Pieces several screens share: status badges, segmented progress bars,
// a confirmation dialog, error boxes and a pager.

import { h, replace } from './dom.js';
import { fmtPercent } from './format.js';

/** A coloured badge with the status word (colour is never the only cue). */
export function statusBadge(status) {
  return h('span', { class: ['badge', `status-${status}`], 'data-status': status }, status);
}

/** A progress bar with completed / failed / skipped segments; fill it with updateProgressBar. */
export function progressBar() {
  const el = h('div', { class: 'bar', role: 'progressbar', 'aria-valuemin': '0', 'aria-valuemax': '100' },
    h('span', { class: 'seg seg-completed' }),
    h('span', { class: 'seg seg-failed' }),
    h('span', { class: 'seg seg-skipped' }));
  return el;
}

/** Sets the bar's segments and accessible value from a task's progress. */
export function updateProgressBar(bar, p) {
  const total = p.totalNodes || 0;
  const share = (n) => (total ? `${(100 * n) / total}%` : '0%');
  const [done, failed, skipped] = bar.children;
  done.style.width = share(p.completedNodes);
  failed.style.width = share(p.failedNodes);
  skipped.style.width = share(p.skippedNodes);
  bar.setAttribute('aria-valuenow', String(p.percentage ?? 0));
  const text = `${p.completedNodes}/${total} nodes completed, ${p.failedNodes} failed, ${p.skippedNodes} skipped (${fmtPercent(p.percentage ?? 0)})`;
  bar.setAttribute('aria-valuetext', text);
  bar.title = text;
}

/** "25/50 nodes" plus the failed and skipped counts when there are any. */
export function nodeCounts(p) {
  const parts = [`${p.completedNodes}/${p.totalNodes} nodes`];
  if (p.failedNodes) parts.push(`${p.failedNodes} failed`);
  if (p.skippedNodes) parts.push(`${p.skippedNodes} skipped`);
  if (p.waitingForRegistry) parts.push(`${p.waitingForRegistry} waiting for registry`);
  return parts.join(' · ');
}

/** Asks for confirmation in a modal <dialog>; resolves true when confirmed. */
export function confirmDialog({ title, message, confirmLabel, danger = true }) {
  return new Promise((resolve) => {
    const dialog = h('dialog', { class: 'confirm', 'aria-labelledby': 'confirm-title' },
      h('form', { method: 'dialog' },
        h('h2', { id: 'confirm-title' }, title),
        h('p', {}, message),
        h('div', { class: 'actions' },
          h('button', { type: 'submit', value: 'no', class: 'btn', autofocus: true }, 'Keep'),
          h('button', { type: 'submit', value: 'yes', class: ['btn', danger ? 'btn-danger' : 'btn-primary'] }, confirmLabel))));
    dialog.addEventListener('close', () => {
      resolve(dialog.returnValue === 'yes');
      dialog.remove();
    });
    document.body.appendChild(dialog);
    dialog.showModal();
  });
}

/** An alert box with an API error's title and details. */
export function errorBox(err) {
  return h('div', { class: 'error-box', role: 'alert' },
    h('strong', {}, err.title || 'Error'),
    err.details ? h('span', {}, ` ${err.details}`) : (err.title ? null : h('span', {}, ` ${err.message}`)));
}

/** Fills container with "1–10 of 34" and Previous / Next buttons. */
export function pager(container, { total, limit, offset }, onOffset) {
  const from = total ? offset + 1 : 0;
  const to = Math.min(offset + limit, total);
  replace(container,
    h('span', { class: 'muted', 'aria-live': 'polite' }, `${from}–${to} of ${total}`),
    h('button', { type: 'button', class: 'btn', disabled: offset === 0, on: { click: () => onOffset(Math.max(0, offset - limit)) } }, '← Previous'),
    h('button', { type: 'button', class: 'btn', disabled: offset + limit >= total, on: { click: () => onOffset(offset + limit) } }, 'Next →'));
}

/** A labelled definition list from [label, value] pairs. */
export function facts(pairs) {
  return h('dl', { class: 'facts' }, pairs.filter(Boolean).map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

// Task detail: live progress (Server-Sent Events, see event-stream.js), a
// chart of completed nodes over time, per-image digests, failed and skipped
// nodes, timestamps and a cancel button with confirmation.

import { api } from '../api.js';
import { h, replace } from '../dom.js';
import { followTask } from '../event-stream.js';
import { progressChart } from '../chart.js';
import { loadSamples, recordSample } from '../samples.js';
import { fmtTime, fmtDuration, fmtRelative, fmtPercent, secondsBetween, successRate, isActive } from '../format.js';
import { statusBadge, progressBar, updateProgressBar, nodeCounts, errorBox, confirmDialog, facts } from '../widgets.js';


export function render(root, { match }, ctx) {
  const id = decodeURIComponent(match[0]);
  const status = h('span');
  const cancelSlot = h('span', { class: 'card-actions' });
  const liveNote = h('span', { class: 'muted live-mode', 'aria-live': 'off' });
  const bar = progressBar();
  const counts = h('p', { class: 'counts' });
  const percent = h('span', { class: 'percent big' });
  const banner = h('div');
  const chartBox = h('figure', { class: 'chart-box' });
  const timesBox = h('div');
  const configBox = h('div');
  const imagesBody = h('tbody');
  const failedBody = h('tbody');
  const failedFilter = h('input', { id: 'failed-filter', type: 'search', placeholder: 'node, image, reason or message', autocomplete: 'off' });
  const failedCount = h('span', { class: 'muted' });
  const failedPrev = h('button', { type: 'button', class: 'btn', id: 'failed-prev', on: { click: () => pageFailed(-1) } }, '← Previous');
  const failedNext = h('button', { type: 'button', class: 'btn', id: 'failed-next', on: { click: () => pageFailed(1) } }, 'Next →');
  const failedPager = h('div', { class: 'toolbar', hidden: true }, failedPrev, failedNext);
  const skippedBody = h('tbody');
  const skippedSection = h('section', { class: 'card', hidden: true, 'aria-labelledby': 'skipped-title' },
    h('h2', { id: 'skipped-title' }, 'Skipped nodes'),
    h('div', { class: 'table-wrap' }, h('table', {}, h('thead', {}, h('tr', {}, ['Node', 'Reason', 'Message', 'Time'].map((t) => h('th', { scope: 'col' }, t)))), skippedBody)));
  const errorSlot = h('div');

  root.append(
    h('p', { class: 'crumbs' }, h('a', { href: '#/tasks' }, '← Tasks')),
    h('div', { class: 'page-head' }, h('h1', { class: 'task-title' }, id), status, cancelSlot),
    errorSlot,
    banner,
    h('section', { class: 'card', 'aria-labelledby': 'progress-title' },
      h('h2', { id: 'progress-title' }, 'Progress ', liveNote),
      h('div', { class: 'progress-row' }, percent, bar),
      counts,
      chartBox),
    h('div', { class: 'grid-2' },
      h('section', { class: 'card', 'aria-labelledby': 'times-title' }, h('h2', { id: 'times-title' }, 'Timeline'), timesBox),
      h('section', { class: 'card', 'aria-labelledby': 'config-title' }, h('h2', { id: 'config-title' }, 'Settings'), configBox)),
    h('section', { class: 'card', 'aria-labelledby': 'images-title' },
      h('h2', { id: 'images-title' }, 'Images'),
      h('div', { class: 'table-wrap' }, h('table', { id: 'image-table' },
        h('thead', {}, h('tr', {}, ['Image', 'Completed', 'Failed', 'Digests'].map((t) => h('th', { scope: 'col' }, t)))),
        imagesBody))),
    h('section', { class: 'card', 'aria-labelledby': 'failed-title' },
      h('h2', { id: 'failed-title' }, 'Failed nodes ', failedCount),
      h('div', { class: 'toolbar' }, h('label', { for: 'failed-filter' }, 'Filter'), failedFilter),
      h('div', { class: 'table-wrap' }, h('table', { id: 'failed-table' },
        h('thead', {}, h('tr', {}, ['Node', 'Image', 'Reason', 'Message', 'Time'].map((t) => h('th', { scope: 'col' }, t)))),
        failedBody)),
      failedPager),
    skippedSection);

  let task = null;
  // The failed (node, image) pairs shown: a page of the nodes endpoint.
  const FAILED_PAGE = 100;
  let failed = { rows: [], total: 0, offset: 0, loadedFor: null };
  let samples = loadSamples(id);
  let stopFollow = null;
  let stopped = false;
  let refetchTimer = null;

  // Only a live task's counts are worth a point; an ended one is drawn to its finishedAt.
  function addSample(p, st) {
    if (isActive(st)) samples = recordSample(id, p);
  }

  // The last point is the counts the page shows now (the newest event's, which
  // may be newer than the last full view), at the task's end once the view has it.
  // Samples are stamped when this page received them, so one can come after
  // the task's finishedAt (an event still in flight when the task ended):
  // only the end itself is drawn from finishedAt on.
  function chartSamples(p, st) {
    const end = task && task.finishedAt ? new Date(task.finishedAt).getTime() : null;
    const pts = end === null ? [...samples] : samples.filter((s) => s.t < end);
    if (task && task.startedAt) pts.unshift({ t: new Date(task.startedAt).getTime(), completed: 0, failed: 0 });
    if (end !== null) pts.push({ t: end, completed: p.completedNodes, failed: p.failedNodes });
    else if (st !== 'pending') pts.push({ t: Date.now(), completed: p.completedNodes, failed: p.failedNodes });
    const seen = new Set();
    return pts.filter((p) => (seen.has(p.t) ? false : seen.add(p.t)));
  }

  function showProgress(p, st) {
    replace(status, statusBadge(st));
    percent.textContent = fmtPercent(p.percentage);
    updateProgressBar(bar, p);
    const batch = p.totalBatches ? ` · batch ${p.currentBatch}/${p.totalBatches}` : '';
    const rate = successRate(p);
    counts.textContent = `${nodeCounts(p)}${batch}${rate === null ? '' : ` · success ${fmtPercent(rate)}`}`;
    replace(cancelSlot, ctx.canMutate && isActive(st)
      ? h('button', { type: 'button', class: 'btn btn-danger', id: 'cancel-task', on: { click: cancel } }, 'Cancel task')
      : null);
    const pts = chartSamples(p, st);
    replace(chartBox,
      pts.length >= 2 ? progressChart(pts, p.totalNodes, chartBox.clientWidth || 640) : h('p', { class: 'muted' }, 'The chart fills in while the task runs.'),
      h('figcaption', { class: 'muted' }, 'Completed (green) and failed (red) nodes over time, as observed by this page.'));
  }

  function showTask(t) {
    task = t;
    showProgress(t.progress, t.status);
    replace(banner, t.reason || t.errorMessage
      ? h('div', { class: 'error-box', role: 'status' }, h('strong', {}, t.reason || 'Failed'), t.errorMessage ? ` ${t.errorMessage}` : '')
      : null);
    const duration = t.startedAt ? fmtDuration(secondsBetween(t.startedAt, t.finishedAt)) : '—';
    replace(timesBox, facts([
      ['Created', fmtTime(t.createdAt)],
      ['Created by', t.createdBy],
      ['Started', fmtTime(t.startedAt)],
      ['Finished', fmtTime(t.finishedAt)],
      [t.finishedAt ? 'Duration' : 'Running for', duration],
      !t.finishedAt && ['ETA', t.estimatedCompletion ? `${fmtTime(t.estimatedCompletion)} (${fmtRelative(t.estimatedCompletion)})` : '—'],
    ]));
    const selector = Object.entries(t.nodeSelector || {}).map(([k, v]) => `${k}=${v}`).join(', ');
    replace(configBox, facts([
      ['Batch size', String(t.batchSize)],
      ['Node selector', selector || 'all nodes'],
      t.nodeNames && t.nodeNames.length && ['Nodes', t.nodeNames.join(', ')],
      ['Priority', String(t.priority)],
      ['Retries', `${t.maxRetries} (${t.retryStrategy}, ${t.retryDelay}s)`],
      ['Pull policy', t.pullPolicy],
      t.pinDigests && ['Digests', 'pinned to the first successful pull of each tag'],
      t.imagePullSecrets && t.imagePullSecrets.length && ['Pull secrets', t.imagePullSecrets.join(', ')],
      t.webhookUrl && ['Webhook', t.webhookUrl],
    ]));
    const statuses = new Map((t.imageStatuses || []).map((s) => [s.image, s]));
    replace(imagesBody, t.images.map((image) => {
      const st = statuses.get(image) || { completedNodes: 0, failedNodes: 0, digests: [] };
      // A pinned digest is marked; more than one digest (the tag moved mid-task) is flagged.
      const digests = st.digests.length ? st.digests : (st.pinnedDigest ? [st.pinnedDigest] : []);
      const cells = digests.map((d) => h('span', {},
        h('code', { class: 'digest', title: d }, d),
        d === st.pinnedDigest ? h('span', { class: 'badge pinned' }, 'pinned') : null));
      if (st.digestDrift) {
        cells.unshift(h('span', { class: 'badge drift', role: 'note' },
          `Drift: the nodes hold ${st.digests.length} different digests of this tag`));
      }
      return h('tr', { 'data-image': image, class: st.digestDrift ? 'drifted' : null },
        h('th', { scope: 'row', class: 'mono' }, image),
        h('td', {}, String(st.completedNodes)),
        h('td', {}, String(st.failedNodes)),
        h('td', { class: 'digests' }, cells.length ? cells : h('span', { class: 'muted' }, '—')));
    }));
    loadFailed();
    skippedSection.hidden = !(t.skippedNodeDetails || []).length;
    replace(skippedBody, (t.skippedNodeDetails || []).map((s) => h('tr', {},
      h('td', { class: 'mono' }, s.nodeName), h('td', {}, s.reason), h('td', {}, s.message), h('td', {}, fmtTime(s.timestamp)))));
  }

  // Fetches the current page of failed pairs when the task's failure count
  // or the page changed; the filter then narrows that page.
  async function loadFailed(force = false) {
    if (!task) return;
    const key = `${task.failedNodeDetailsTotal ?? (task.failedNodeDetails || []).length}@${failed.offset}`;
    if (!force && key === failed.loadedFor) return renderFailed();
    failed.loadedFor = key;
    try {
      const page = await api.listTaskNodes(id, { status: 'failed', limit: FAILED_PAGE, offset: failed.offset });
      if (stopped || key !== failed.loadedFor) return;
      failed = { ...failed, rows: page.nodes, total: page.total };
    } catch (e) {
      // An older service without the endpoint: the view's own (first 100) failures.
      const own = task.failedNodeDetails || [];
      failed = { ...failed, rows: own, total: own.length };
    }
    renderFailed();
  }

  function pageFailed(step) {
    const offset = Math.max(0, failed.offset + step * FAILED_PAGE);
    if (offset >= failed.total && step > 0) return;
    failed.offset = offset;
    loadFailed(true);
  }

  function renderFailed() {
    const needle = failedFilter.value.trim().toLowerCase();
    const all = failed.rows;
    const rows = all.filter((f) => !needle || [f.nodeName, f.image, f.reason, f.message].some((x) => String(x).toLowerCase().includes(needle)));
    const paged = failed.total > all.length;
    const span = paged ? `${failed.offset + 1}–${failed.offset + all.length} of ${failed.total}` : String(all.length);
    failedCount.textContent = needle ? `(${rows.length} of ${span})` : `(${span})`;
    failedPager.hidden = !paged && failed.offset === 0;
    failedPrev.disabled = failed.offset === 0;
    failedNext.disabled = failed.offset + all.length >= failed.total;
    replace(failedBody, rows.length
      ? rows.map((f) => h('tr', { class: 'failed-row' },
        h('td', { class: 'mono' }, f.nodeName), h('td', { class: 'mono' }, f.image), h('td', {}, h('span', { class: 'reason' }, f.reason)),
        h('td', { class: 'message' }, f.message), h('td', {}, fmtTime(f.timestamp))))
      : h('tr', {}, h('td', { colspan: 5, class: 'muted' }, all.length ? 'No failed node matches the filter.' : 'No node failed.')));
  }
  failedFilter.addEventListener('input', renderFailed);

  async function cancel() {
    const ok = await confirmDialog({ title: 'Cancel task?', message: `Stop ${id}? Pulls in progress are stopped and its Jobs deleted; nodes that finished keep their images.`, confirmLabel: 'Cancel task' });
    if (!ok) return;
    try {
      await api.cancelTask(id);
      ctx.notify(`${id} cancelled.`);
      await load();
    } catch (e) {
      ctx.notify(e.message, 'error');
      load();
    }
  }

  // Progress events carry counts only; failed nodes, digests and ETA come with a fresh GET, at most once a second.
  function scheduleRefetch() {
    if (refetchTimer) return;
    refetchTimer = setTimeout(async () => { refetchTimer = null; if (!stopped) await load(false); }, 1000);
  }

  async function load(follow = true) {
    try {
      const t = await api.getTask(id);
      if (stopped) return;
      replace(errorSlot);
      addSample(t.progress, t.status);
      showTask(t);
      if (follow && isActive(t.status) && !stopFollow) {
        stopFollow = followTask(id, {
          onProgress(p) {
            if (stopped) return;
            addSample(p, p.status);
            if (task) task.progress = { ...task.progress, ...p };
            showProgress(p, p.status);
            scheduleRefetch();
          },
          onFinished(final) {
            if (stopped) return;
            liveNote.textContent = '';
            if (final && final.taskId) showTask(final);
            load(false);
          },
          onMode(mode) { liveNote.textContent = mode === 'stream' ? '· live' : '· refreshing'; },
        });
      }
    } catch (e) {
      if (!stopped) replace(errorSlot, errorBox(e));
    }
  }
  load();

  return () => {
    stopped = true;
    if (stopFollow) stopFollow();
    clearTimeout(refetchTimer);
  };
}

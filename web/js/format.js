// Human-readable times, durations and ratios.

/** "2024-01-16 10:00:05" in the browser's time zone, or "—". */
export function fmtTime(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** "1h 02m", "3m 05s", "42s". */
export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return '—';
  let s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600); s -= h * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  if (h) return `${h}h ${String(m).padStart(2, '0')}m`;
  if (m) return `${m}m ${String(s).padStart(2, '0')}s`;
  return `${s}s`;
}

/** Seconds between two ISO timestamps (end defaults to now). */
export function secondsBetween(startIso, endIso) {
  if (!startIso) return null;
  const end = endIso ? new Date(endIso) : new Date();
  return (end.getTime() - new Date(startIso).getTime()) / 1000;
}

/** "in 3m 05s" / "3m 05s ago". */
export function fmtRelative(iso) {
  if (!iso) return '';
  const diff = secondsBetween(new Date().toISOString(), iso);
  return diff >= 0 ? `in ${fmtDuration(diff)}` : `${fmtDuration(-diff)} ago`;
}

/** Success rate of the nodes that ended: completed / (completed + failed), or null. */
export function successRate(progress) {
  const ended = progress.completedNodes + progress.failedNodes;
  if (!ended) return null;
  return (progress.completedNodes / ended) * 100;
}

/** "97.5%" with one decimal, "100%" for whole numbers. */
export function fmtPercent(value) {
  if (value === null || value === undefined) return '—';
  const rounded = Math.round(value * 10) / 10;
  return `${Number.isInteger(rounded) ? rounded : rounded.toFixed(1)}%`;
}

/** Whether a task status can still change. */
export function isActive(status) {
  return status === 'pending' || status === 'running';
}

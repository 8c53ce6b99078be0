// Follows one task live. Reads GET /api/v1/tasks/{id}/events (Server-Sent
// Events) with fetch() rather than EventSource, because EventSource cannot
// send an Authorization header and the token must never go into a URL.
// When the server has no such stream (or it breaks), it falls back to
// polling GET /api/v1/tasks/{id}, and reconnects the stream later.

import { api, authHeaders, ApiError } from './api.js';

const POLL_MS = 1500;
const RECONNECT_MS = 3000;

/** Parses SSE text into events; returns [events, rest] where rest is an incomplete tail. */
export function parseSse(buffer) {
  const events = [];
  const blocks = buffer.replace(/\r\n?/g, '\n').split('\n\n');
  const rest = blocks.pop();
  for (const block of blocks) {
    const event = { id: null, event: 'message', data: [] };
    for (const line of block.split('\n')) {
      if (!line || line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let val = colon < 0 ? '' : line.slice(colon + 1);
      if (val.startsWith(' ')) val = val.slice(1);
      if (field === 'data') event.data.push(val);
      else if (field === 'id') event.id = val;
      else if (field === 'event') event.event = val;
    }
    if (event.data.length) events.push({ ...event, data: event.data.join('\n') });
  }
  return [events, rest];
}

/**
 * Follows a task: onProgress({...progress, status}) on each change,
 * onFinished(task) once it ends, onMode('stream'|'polling') as the transport changes.
 * Returns a function that stops following.
 */
export function followTask(taskId, { onProgress, onFinished, onMode, onError }) {
  let stopped = false;
  let controller = null;
  let timer = null;
  let lastEventId = null;

  const stop = () => {
    stopped = true;
    if (controller) controller.abort();
    if (timer) clearTimeout(timer);
  };

  const later = (fn, ms) => { if (!stopped) timer = setTimeout(fn, ms); };

  async function poll(untilReconnect) {
    if (stopped) return;
    onMode && onMode('polling');
    try {
      const task = await api.getTask(taskId);
      if (stopped) return;
      if (['completed', 'failed', 'cancelled'].includes(task.status)) { onFinished(task); return; }
      onProgress({ ...task.progress, status: task.status }, task);
    } catch (e) {
      if (onError) onError(e);
      if (e instanceof ApiError && (e.status === 401 || e.status === 404)) return;
    }
    const remaining = untilReconnect - POLL_MS;
    if (remaining <= 0) later(stream, POLL_MS);
    else later(() => poll(remaining), POLL_MS);
  }

  async function stream() {
    if (stopped) return;
    controller = new AbortController();
    const headers = authHeaders({ Accept: 'text/event-stream' });
    if (lastEventId) headers['Last-Event-ID'] = lastEventId;
    let response;
    try {
      response = await fetch(`/api/v1/tasks/${encodeURIComponent(taskId)}/events`, { headers, signal: controller.signal, cache: 'no-store' });
    } catch {
      if (!stopped) poll(RECONNECT_MS);
      return;
    }
    const type = response.headers.get('Content-Type') || '';
    if (!response.ok || !type.startsWith('text/event-stream') || !response.body) {
      if (response.status === 401) window.dispatchEvent(new CustomEvent('prewarm:unauthorized'));
      // No stream on this server (older build) or the task is gone: poll; try the stream again much later.
      poll(response.status === 404 ? 60000 : RECONNECT_MS);
      return;
    }
    onMode && onMode('stream');
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        const [events, rest] = parseSse(buffer);
        buffer = rest;
        for (const ev of events) {
          if (ev.id) lastEventId = ev.id;
          let msg;
          try { msg = JSON.parse(ev.data); } catch { continue; }
          // The event name says what it is and the data is the payload; a
          // WebSocket-style envelope {type, data} is understood too.
          const enveloped = msg && typeof msg.type === 'string' && 'data' in msg;
          const kind = enveloped ? msg.type : ev.event;
          const payload = enveloped ? msg.data : msg;
          if (kind === 'finished') { stop(); onFinished(payload); return; }
          if (kind === 'progress') onProgress(payload);
        }
      }
    } catch {
      // aborted or the connection dropped; handled below
    }
    if (!stopped) poll(RECONNECT_MS);
  }

  stream();
  return stop;
}

// The HTTP API as the UI uses it: JSON in and out, the bearer token from
// sessionStorage (never in a URL), errors as ApiError with the server's
// {error, details} so views can show them next to the right field.

const TOKEN_KEY = 'prewarm.token';

/** A failed API call: HTTP status plus the server's error title and details. */
export class ApiError extends Error {
  constructor(status, body, fallback) {
    const title = (body && body.error) || fallback || `HTTP ${status}`;
    const details = body && body.details ? String(body.details) : '';
    super(details ? `${title}: ${details}` : title);
    this.status = status;
    this.title = title;
    this.details = details;
    this.body = body;
  }
}

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

export function setToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** Headers every call carries: Accept, and Authorization when logged in. */
export function authHeaders(extra = {}) {
  const headers = { Accept: 'application/json', ...extra };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  return headers;
}

/** Whether a 404 means "this server has no such route" (feature not deployed) rather than "no such object". */
export function isMissingRoute(err) {
  return err instanceof ApiError && err.status === 404 && /\broute\b/i.test(`${err.title} ${err.details}`);
}

async function request(method, path, body, { quiet = false } = {}) {
  const init = { method, headers: authHeaders(), cache: 'no-store' };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, null, `Cannot reach the prewarm service (${e.message})`);
  }
  const text = await response.text();
  let json = null;
  if (text) {
    try { json = JSON.parse(text); } catch { json = null; }
  }
  if (!response.ok) {
    const err = new ApiError(response.status, json, response.statusText);
    if (response.status === 401 && !quiet) window.dispatchEvent(new CustomEvent('prewarm:unauthorized', { detail: err }));
    throw err;
  }
  return json;
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  const s = q.toString();
  return s ? `?${s}` : '';
}

const enc = encodeURIComponent;

/** Every endpoint the UI calls (docs/api.md). */
export const api = {
  whoami: () => request('GET', '/api/v1/whoami'),
  listTasks: ({ status, limit = 10, offset = 0 } = {}) => request('GET', `/api/v1/tasks${query({ status, limit, offset })}`),
  getTask: (id) => request('GET', `/api/v1/tasks/${enc(id)}`),
  listTaskNodes: (id, { status, image, limit = 100, offset = 0 } = {}) => request('GET', `/api/v1/tasks/${enc(id)}/nodes${query({ status, image, limit, offset })}`),
  createTask: (body) => request('POST', '/api/v1/tasks', body),
  cancelTask: (id) => request('DELETE', `/api/v1/tasks/${enc(id)}`),
  /** Cancels a task id that cannot exist: 403 means the caller may only read, 404 that it may act. */
  probeMayAct: () => request('DELETE', '/api/v1/tasks/task-00000000-000000', undefined, { quiet: true })
    .then(() => true, (e) => { if (e.status === 401 || e.status === 0) throw e; return e.status !== 403; }),
  listSchedules: ({ limit = 10, offset = 0 } = {}) => request('GET', `/api/v1/scheduled-tasks${query({ limit, offset })}`),
  getSchedule: (id) => request('GET', `/api/v1/scheduled-tasks/${enc(id)}`),
  createSchedule: (body) => request('POST', '/api/v1/scheduled-tasks', body),
  updateSchedule: (id, body) => request('PUT', `/api/v1/scheduled-tasks/${enc(id)}`, body),
  deleteSchedule: (id) => request('DELETE', `/api/v1/scheduled-tasks/${enc(id)}`),
  enableSchedule: (id) => request('PUT', `/api/v1/scheduled-tasks/${enc(id)}/enable`),
  disableSchedule: (id) => request('PUT', `/api/v1/scheduled-tasks/${enc(id)}/disable`),
  triggerSchedule: (id) => request('POST', `/api/v1/scheduled-tasks/${enc(id)}/trigger`),
  coverage: ({ images, nodeSelector, groupBy }) => request('GET', `/api/v1/coverage${query({ images, nodeSelector, groupBy })}`),
  listPolicies: ({ limit = 10, offset = 0 } = {}) => request('GET', `/api/v1/keep-warm${query({ limit, offset })}`),
  enablePolicy: (id) => request('PUT', `/api/v1/keep-warm/${enc(id)}/enable`),
  disablePolicy: (id) => request('PUT', `/api/v1/keep-warm/${enc(id)}/disable`),
  nodeStats: ({ limit = 20 } = {}) => request('GET', `/api/v1/nodes/stats${query({ limit })}`),
  listExecutions: (id, { limit = 10, offset = 0 } = {}) => request('GET', `/api/v1/scheduled-tasks/${enc(id)}/executions${query({ limit, offset })}`),
};

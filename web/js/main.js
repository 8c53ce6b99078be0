// The single-page app: a hash router (#/tasks, #/tasks/{id}, #/schedules, #/keep-warm …),
// who the user is (token + role), and the frame around every screen.

import { api, getToken, setToken, isMissingRoute, ApiError } from './api.js';
import { h, replace } from './dom.js';
import * as login from './views/login.js';
import * as tasks from './views/tasks.js';
import * as newTask from './views/new-task.js';
import * as taskDetail from './views/task-detail.js';
import * as schedules from './views/schedules.js';
import * as coverage from './views/coverage.js';
import * as keepWarm from './views/keep-warm.js';
import * as nodes from './views/nodes.js';

const main = document.getElementById('main');
const userBox = document.getElementById('user');
const toast = document.getElementById('toast');
const nav = document.getElementById('nav');

/**
 * Who is using the UI: name and role ('admin', 'operator', 'viewer'), or 'open' when the server has no auth;
 * and which replica answers and which one leads (runs the engine), when the server says.
 */
const session = { name: null, role: null, known: false, replica: null, leader: null };
/** How often the replica and leader shown are looked at again. */
const REPLICA_REFRESH_MS = 15_000;

let cleanup = null;
let toastTimer = null;

const ctx = {
  session,
  /** Whether create/cancel/trigger/edit/delete controls are shown. */
  get canMutate() { return session.role !== 'viewer'; },
  /** Whether admin-only controls (deleting a schedule) are shown. */
  get canAdmin() { return session.role === 'admin' || session.role === 'open'; },
  navigate(hash) {
    if (location.hash === hash) render();
    else location.hash = hash;
  },
  notify(message, kind = 'info') {
    replace(toast, h('div', { class: ['toast', `toast-${kind}`] }, message));
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => replace(toast), 6000);
  },
  async login(token) {
    setToken(token);
    session.known = false;
    await identify();
  },
  logout() {
    setToken('');
    Object.assign(session, { name: null, role: null, known: false });
    location.hash = '#/login';
  },
};

/** Learns the user's name and role: GET /api/v1/whoami when the server has it, else by trying a read. */
async function identify() {
  try {
    const me = await api.whoami();
    session.name = me.name || me.tokenName || me.user || 'anonymous';
    session.role = me.auth === false ? 'open' : (me.role || 'viewer');
    session.replica = me.replica || null;
    session.leader = me.leader || null;
  } catch (e) {
    if (!isMissingRoute(e)) throw e;
    // No whoami on this server: a read tells whether the token is good, and
    // cancelling a task id that cannot exist (no side effect) whether it may act.
    await api.listTasks({ limit: 1 });
    if (getToken()) {
      session.name = 'token';
      session.role = (await api.probeMayAct()) ? 'operator' : 'viewer';
    } else {
      session.name = 'anonymous';
      session.role = 'open';
    }
  }
  session.known = true;
  renderUser();
}

/** "replica a (leader)", "replica b · leader a", or nothing when the server takes no Lease. */
function replicaLabel() {
  if (!session.replica) return null;
  if (session.replica === session.leader) return `replica ${session.replica} (leader)`;
  return `replica ${session.replica} · leader ${session.leader || 'none yet'}`;
}

function renderUser() {
  if (!session.known) { replace(userBox); return; }
  const label = session.role === 'open' ? 'no login required' : `${session.name} · ${session.role}`;
  const replica = replicaLabel();
  replace(userBox,
    replica ? h('span', { id: 'replica', class: 'muted', title: 'The replica that answered, and the one running the engine' }, replica) : null,
    h('span', { class: 'muted', 'data-role': session.role }, label),
    getToken() ? h('button', { type: 'button', class: 'btn btn-small', on: { click: () => ctx.logout() } }, 'Log out') : null);
}

const ROUTES = [
  [/^#\/login$/, login, 'Log in'],
  [/^#\/tasks\/new$/, newTask, 'New task'],
  [/^#\/tasks\/([^/?]+)$/, taskDetail, 'Task'],
  [/^#\/(?:tasks)?$/, tasks, 'Tasks'],
  [/^#\/schedules(?:\/([^/?]+))?(?:\/(edit))?$/, schedules, 'Schedules'],
  [/^#\/coverage$/, coverage, 'Coverage'],
  [/^#\/keep-warm$/, keepWarm, 'Keep-warm'],
  [/^#\/nodes$/, nodes, 'Nodes'],
];

async function render() {
  if (cleanup) { cleanup(); cleanup = null; }
  const hash = location.hash || '#/';
  const [path, queryString] = hash.split('?');
  const params = new URLSearchParams(queryString || '');
  const route = ROUTES.find(([re]) => re.test(path)) || ROUTES[3];
  const [re, view, title] = route;
  const match = path.match(re) || [];

  if (view !== login && !session.known) {
    try {
      await identify();
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) { location.hash = '#/login'; return; }
      replace(main, h('div', { class: 'error-box', role: 'alert' }, e.message));
      return;
    }
  }
  for (const a of nav.querySelectorAll('a')) {
    const current = path.startsWith(a.getAttribute('href')) && (a.getAttribute('href') !== '#/tasks' || !path.startsWith('#/tasks/new'));
    if (current) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  nav.hidden = view === login;
  document.title = `${title} · prewarm`;
  replace(main);
  cleanup = view.render(main, { match: match.slice(1), params }, ctx) || null;
}

window.addEventListener('prewarm:unauthorized', () => {
  if (location.hash.startsWith('#/login')) return;
  if (getToken()) sessionStorage.setItem('prewarm.loginMessage', 'Your token was not accepted. Please log in again.');
  setToken('');
  Object.assign(session, { name: null, role: null, known: false });
  renderUser();
  location.hash = '#/login';
});

// A 403 means the role is known but this action needs more; the action's own
// error message says so, nothing else changes.
window.addEventListener('hashchange', render);
render();

// The leader can change (a rolling update, a failover): look again now and then.
setInterval(async () => {
  if (!session.known || !session.replica || document.hidden) return;
  try {
    const me = await api.whoami();
    if (me.replica !== session.replica || me.leader !== session.leader) {
      Object.assign(session, { replica: me.replica || null, leader: me.leader || null });
      renderUser();
    }
  } catch { /* the next screen's own requests report problems */ }
}, REPLICA_REFRESH_MS);

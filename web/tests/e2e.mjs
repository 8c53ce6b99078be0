// End-to-end tests of the web UI in a real browser (Debian's chromium driven
// by playwright-core) against a live prewarm service and kube-sim, started by
// run.sh. Every screen is saved under $ARTIFACTS/screenshots.
//
//   PREWARM_URL=http://127.0.0.1:8080 node web/tests/e2e.mjs
//   (+ PREWARM_AUTH_URL, PREWARM_ADMIN_TOKEN, PREWARM_VIEWER_TOKEN for the login tests;
//    + PREWARM_TLS_URL, PREWARM_TLS_SPKI and NODE_EXTRA_CA_CERTS for the HTTPS test;
//    E2E_ONLY=<regex> for only some tests)

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const URL = process.env.PREWARM_URL;
if (!URL) throw new Error('PREWARM_URL is not set (run web/tests/run.sh)');
const AUTH_URL = process.env.PREWARM_AUTH_URL;
const TLS_URL = process.env.PREWARM_TLS_URL;
const SHOTS = join(process.env.ARTIFACTS || 'artifacts', 'screenshots');
mkdirSync(SHOTS, { recursive: true });
const TIMEOUT = 20_000;

const launch = (extraArgs = []) => chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run', ...extraArgs],
});
const browser = await launch();

const results = [];
// E2E_ONLY=<regex> runs only the tests whose names match (while working on one).
const ONLY = process.env.E2E_ONLY && new RegExp(process.env.E2E_ONLY);
async function test(name, fn, { skip, on = browser } = {}) {
  if (ONLY && !ONLY.test(name)) return;
  if (skip) { results.push({ name, status: 'SKIP', why: skip }); console.log(`SKIP ${name}: ${skip}`); return; }
  const context = await on.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error' && !/status of 40[0134]/.test(m.text())) problems.push(`console: ${m.text()}`); });
  const started = Date.now();
  try {
    await fn(page, context);
    assert.deepEqual(problems, [], 'the page logged errors');
    results.push({ name, status: 'PASS' });
    console.log(`PASS ${name} (${((Date.now() - started) / 1000).toFixed(1)}s)`);
  } catch (e) {
    results.push({ name, status: 'FAIL' });
    console.log(`FAIL ${name}\n${e.stack}\n${problems.join('\n')}`);
    await page.screenshot({ path: join(SHOTS, `FAILED-${name.replace(/\W+/g, '-')}.png`), fullPage: true }).catch(() => {});
  } finally {
    await context.close();
  }
}

const shot = (page, name) => page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });

async function apiCall(method, path, body, { base = URL, token } = {}) {
  const headers = { 'Content-Type': 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  const res = await fetch(base + path, { method, headers, body: body ? JSON.stringify(body) : undefined });
  const text = await res.text();
  return { status: res.status, headers: res.headers, json: text ? JSON.parse(text) : null };
}

async function createTask(body, opts) {
  const res = await apiCall('POST', '/api/v1/tasks', { nodeSelector: { pool: 'ui' }, ...body }, opts);
  assert.equal(res.status, 201, JSON.stringify(res.json));
  return res.json.taskId;
}

async function waitStatus(id, wanted, opts) {
  for (let i = 0; i < 300; i += 1) {
    const res = await apiCall('GET', `/api/v1/tasks/${id}`, null, opts);
    if (wanted.includes(res.json.status)) return res.json;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${id} never reached ${wanted}`);
}

// Whether this build streams task events (else the detail page polls).
const probe = await apiCall('GET', '/api/v1/tasks/task-00000000-000000/events');
const STREAMS = !(probe.status === 404 && /no route/i.test(JSON.stringify(probe.json)));
console.log(`task event stream: ${STREAMS ? 'available' : 'not in this build (the detail page polls)'}`);

// ---------------------------------------------------------------------------

await test('UI files are served with content types, CSP and caching headers', async () => {
  const index = await fetch(`${URL}/`);
  assert.equal(index.status, 200);
  assert.match(index.headers.get('content-type'), /^text\/html/);
  const csp = index.headers.get('content-security-policy');
  assert.match(csp, /default-src 'self'/);
  assert.match(csp, /script-src 'self'(;|$)/);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
  assert.equal(index.headers.get('x-content-type-options'), 'nosniff');
  assert.match(index.headers.get('cache-control'), /no-cache/);
  const js = await fetch(`${URL}/ui/js/main.js`);
  assert.match(js.headers.get('content-type'), /^text\/javascript/);
  const again = await fetch(`${URL}/ui/js/main.js`, { headers: { 'If-None-Match': js.headers.get('etag') } });
  assert.equal(again.status, 304);
  const me = await apiCall('GET', '/api/v1/whoami');
  const { name, role, auth, replica, leader } = me.json;
  assert.deepEqual({ name, role, auth }, { name: 'anonymous', role: 'admin', auth: false });
  assert.ok(replica && leader === replica, 'a single instance names itself as replica and leader');
  const missing = await fetch(`${URL}/ui/nope.js`);
  assert.equal(missing.status, 404);
  assert.ok((await missing.json()).error);
});

// Early in the run: after the cancel test, a node's next pull waits behind the
// cancelled 15 s pull (a kubelet pulls serially), which would make that node look slow too.
await test('the nodes page lists learned pull speeds, the slow node first', async (page) => {
  // ui-node-5 pulls nodespeed/* in 8 s, the others in 0.5 s (scenario.yaml).
  const id = await createTask({ images: ['nodespeed/app:1'], batchSize: 6 });
  assert.equal((await waitStatus(id, ['completed', 'failed'])).status, 'completed');
  // Speeds are written a little after the pulls end.
  for (let i = 0; i < 300; i += 1) {
    const stats = (await apiCall('GET', '/api/v1/nodes/stats?limit=1000')).json;
    if (stats.total === 6 && stats.nodes[0].node === 'ui-node-5') break;
    await page.waitForTimeout(100);
  }
  await page.goto(`${URL}/#/tasks`);
  await page.getByRole('link', { name: 'Nodes' }).click();
  await page.getByRole('heading', { name: 'Nodes' }).waitFor();
  await page.locator('#nodes-table').waitFor();
  const rows = page.locator('#nodes-table tbody tr');
  assert.equal(await rows.count(), 6);
  assert.equal(await rows.first().getAttribute('data-node'), 'ui-node-5');
  const seconds = await page.locator('#nodes-table td[data-seconds]').evaluateAll((tds) => tds.map((td) => Number(td.dataset.seconds)));
  assert.deepEqual(seconds, [...seconds].sort((a, b) => b - a), 'slowest first');
  assert.ok(seconds[0] > seconds[5] + 0.5, `ui-node-5 is clearly slower: ${seconds}`);
  assert.match(await rows.first().locator('td').first().textContent(), /^\d+(\.\d+)? s$/);
  assert.equal(await rows.first().locator('td').last().textContent(), 'yes');
  assert.match(await page.locator('#nodes-total').textContent(), /^6 of 6 nodes with a learned pull speed/);
  await shot(page, 'nodes');
  await page.selectOption('#nodes-limit', '100');
  await page.waitForURL(/#\/nodes\?limit=100$/);
  await page.locator('#nodes-table').waitFor();
  assert.equal(await page.locator('#nodes-limit').inputValue(), '100');
});

await test('create a task in the form and watch its bar reach 100% without reload, then see digests', async (page) => {
  let loads = 0;
  page.on('load', () => { loads += 1; });
  await page.goto(`${URL}/`);
  await page.getByRole('heading', { name: 'Tasks' }).waitFor();
  const me = await apiCall('GET', '/api/v1/whoami');
  assert.equal(await page.locator('#replica').textContent(), `replica ${me.json.replica} (leader)`);
  await page.click('#new-task');
  await page.getByRole('heading', { name: 'New task' }).waitFor();

  // Validation as you type, with the API's grammar.
  await page.fill('#images', 'nginx:1.27\nnginx::latest\nnginx:1.27');
  await page.getByText('Line 2: invalid image reference "nginx::latest"').waitFor();
  await page.getByText('Line 3: duplicate image "nginx:1.27"').waitFor();
  await shot(page, 'new-task-validation');
  await page.fill('#images', 'nginx:1.27\nredis:7');
  assert.equal(await page.locator('#images-problems li').count(), 0);
  await page.fill('#batch-size', '2');
  await page.click('#add-label');
  await page.locator('.selector-key').last().fill('pool');
  await page.locator('.selector-value').last().fill('ui');
  await shot(page, 'new-task');
  await page.click('#submit-task');
  await page.waitForURL(/#\/tasks\/task-\d{8}-[a-z0-9]{6}$/);
  const id = decodeURIComponent(page.url().split('#/tasks/')[1]);

  // Back to the list (in-app navigation): the bar moves on its own.
  await page.getByRole('link', { name: 'Tasks', exact: true }).first().click();
  const card = page.locator(`li[data-task-id="${id}"]`);
  await card.waitFor();
  const seen = new Set();
  for (let i = 0; i < 600; i += 1) {
    const now = Number(await card.locator('.bar').getAttribute('aria-valuenow'));
    seen.add(now);
    if (now === 100 && (await card.getAttribute('data-status')) === 'completed') break;
    await page.waitForTimeout(100);
  }
  assert.equal(await card.getAttribute('data-status'), 'completed');
  assert.equal(await card.locator('.percent').textContent(), '100%');
  assert.match(await card.locator('.counts').textContent(), /^6\/6 nodes/);
  assert.ok([...seen].some((v) => v < 100), `bar was never seen below 100%: ${[...seen]}`);
  assert.match(await card.textContent(), /Success 100%/);
  assert.match(await card.textContent(), /Took \d+s/);
  assert.equal(loads, 1, 'the page reloaded');
  await shot(page, 'tasks');

  await card.locator('a.task-id').click();
  await page.locator('.task-title', { hasText: id }).waitFor();
  const row = page.locator('#image-table tr[data-image="redis:7"]');
  await row.locator('code.digest').first().waitFor();
  assert.match(await row.locator('code.digest').first().textContent(), /^sha256:[0-9a-f]{64}$/);
  assert.equal(await row.locator('td').first().textContent(), '6');
  await page.locator('svg.chart polyline.series-completed').waitFor();
  assert.equal(await page.locator('#cancel-task').count(), 0, 'a completed task offers cancel');
  await shot(page, 'task-detail');
});

await test('an image whose nodes hold different digests is flagged as drift', async (page) => {
  const id = await createTask({ images: ['drift/app:1'], batchSize: 6 });
  await waitStatus(id, ['completed']);
  await page.goto(`${URL}/#/tasks/${id}`);
  const row = page.locator('#image-table tr[data-image="drift/app:1"]');
  await row.locator('.badge.drift').waitFor();
  assert.match(await row.locator('.badge.drift').textContent(), /2 different digests/);
  assert.match(await row.getAttribute('class'), /drifted/);
  assert.equal(await row.locator('code.digest').count(), 2);
  assert.equal(await row.locator('.badge.pinned').count(), 0);
  await shot(page, 'task-digest-drift');
});

await test('the task page follows a running task live to completion and charts it', async (page) => {
  let loads = 0;
  page.on('load', () => { loads += 1; });
  const id = await createTask({ images: ['busybox:1.36'], batchSize: 1 });
  await page.goto(`${URL}/#/tasks/${id}`);
  await page.locator('.live-mode', { hasText: STREAMS ? '· live' : '· refreshing' }).waitFor();
  const seen = new Set();
  for (let i = 0; i < 600 && !(await page.locator('.badge[data-status="completed"]').count()); i += 1) {
    seen.add(Number(await page.locator('.bar').getAttribute('aria-valuenow')));
    await page.waitForTimeout(100);
  }
  await page.locator('.badge[data-status="completed"]').waitFor();
  assert.ok([...seen].filter((v) => v > 0 && v < 100).length >= 2, `few intermediate values: ${[...seen]}`);
  assert.equal(await page.locator('.percent.big').textContent(), '100%');
  assert.ok(await page.locator('svg.chart circle.sample').count() >= 4, 'the chart has few points');
  assert.match(await page.locator('#chart-desc').textContent(), /^6 of 6 nodes completed, 0 failed/);
  assert.equal(loads, 1, 'the page reloaded');
  await shot(page, 'task-detail-live');
});

await test('a failing image shows its failed nodes with reasons, filterable', async (page) => {
  const id = await createTask({ images: ['registry.example.com/missing/app:1'], batchSize: 6 });
  await page.goto(`${URL}/#/tasks/${id}`);
  await page.locator('.badge[data-status="failed"]').waitFor();
  const rows = page.locator('#failed-table tr.failed-row');
  await page.waitForFunction(() => document.querySelectorAll('#failed-table tr.failed-row').length === 6);
  assert.match(await rows.first().textContent(), /ErrImagePull/);
  assert.match(await rows.first().textContent(), /manifest unknown/);
  await page.fill('#failed-filter', 'ui-node-3');
  assert.equal(await rows.count(), 1);
  assert.match(await rows.first().locator('td').first().textContent(), /^ui-node-3$/);
  assert.match(await page.locator('#failed-title').textContent(), /1 of 6/);
  await page.fill('#failed-filter', '');
  await shot(page, 'task-failed');
});

await test('more than 100 failed pairs page through the nodes endpoint', async (page) => {
  // 6 nodes × 17 failing images = 102 pairs; a node pulls its images one after another.
  const images = Array.from({ length: 17 }, (_, i) => `registry.example.com/missing/paged-${i}:1`);
  const id = await createTask({ images, batchSize: 6 });
  await waitStatus(id, ['failed']);
  await page.goto(`${URL}/#/tasks/${id}`);
  const rows = page.locator('#failed-table tr.failed-row');
  await page.waitForFunction(() => /1–100 of 102/.test(document.querySelector('#failed-title').textContent));
  assert.equal(await rows.count(), 100);
  await page.click('#failed-next');
  await page.waitForFunction(() => /101–102 of 102/.test(document.querySelector('#failed-title').textContent));
  assert.equal(await rows.count(), 2);
  assert.match(await rows.last().locator('td').first().textContent(), /^ui-node-5$/);
  assert.match(await rows.last().locator('td').nth(1).textContent(), /paged-16:1$/);
  await page.click('#failed-prev');
  await page.waitForFunction(() => /1–100 of 102/.test(document.querySelector('#failed-title').textContent));
});

await test('cancel a running task from its page after confirming', async (page) => {
  const id = await createTask({ images: ['slow/big:1'], batchSize: 2 });
  await waitStatus(id, ['running']);
  await page.goto(`${URL}/#/tasks/${id}`);
  await page.locator('.badge[data-status="running"]').waitFor();
  await page.locator('.live-mode', { hasText: STREAMS ? '· live' : '· refreshing' }).waitFor();
  await page.click('#cancel-task');
  const dialog = page.getByRole('dialog', { name: 'Cancel task?' });
  await dialog.waitFor();
  await shot(page, 'task-cancel-confirm');
  // "Keep" leaves it running.
  await dialog.getByRole('button', { name: 'Keep' }).click();
  assert.equal((await apiCall('GET', `/api/v1/tasks/${id}`)).json.status, 'running');
  await page.click('#cancel-task');
  await page.getByRole('dialog', { name: 'Cancel task?' }).getByRole('button', { name: 'Cancel task' }).click();
  await page.locator('.badge[data-status="cancelled"]').waitFor();
  await page.locator('#cancel-task').waitFor({ state: 'detached' });
  assert.equal((await apiCall('GET', `/api/v1/tasks/${id}`)).json.status, 'cancelled');
});

await test('markup in a failure message is shown as text and never runs', async (page) => {
  const id = await createTask({ images: ['registry.example.com/xss/app:1'], batchSize: 6 });
  await waitStatus(id, ['failed']);
  await page.goto(`${URL}/#/tasks/${id}`);
  const message = page.locator('#failed-table td.message').first();
  await message.waitFor();
  assert.match(await message.textContent(), /<script>window\.pwned=1<\/script><img src=x onerror="window\.pwned=2">/);
  await page.fill('#failed-filter', '<script>');
  await page.waitForTimeout(500);
  assert.equal(await page.evaluate(() => window.pwned), undefined);
  assert.equal(await page.locator('#failed-table img, #failed-table script').count(), 0);
  await shot(page, 'task-escaped-markup');
});

const schedulesApi = await apiCall('GET', '/api/v1/scheduled-tasks');
await test('create, toggle, trigger and delete a schedule and see its execution', async (page) => {
  await page.goto(`${URL}/#/schedules`);
  await page.click('#new-schedule');
  await page.fill('#schedule-name', 'ui-nightly');
  await page.fill('#cron-expr', '0 0 * * *');
  await page.locator('#cron-expr-hint', { hasText: 'every day at 00:00 UTC' }).waitFor();
  await page.fill('#cron-expr', '0 0 * *');
  await page.locator('#cron-expr-error', { hasText: 'expected 5 fields' }).waitFor();
  await page.fill('#cron-expr', '0 0 * * *');
  await page.fill('#images', 'nginx:1.27');
  await page.click('#add-label');
  await page.locator('.selector-key').last().fill('pool');
  await page.locator('.selector-value').last().fill('ui');
  await shot(page, 'schedule-form');
  await page.click('#save-schedule');
  await page.waitForURL(/#\/schedules\/scheduled-task-/);
  const id = decodeURIComponent(page.url().split('#/schedules/')[1]);

  await page.getByRole('link', { name: 'Schedules', exact: true }).first().click();
  const row = page.locator(`tr[data-schedule-id="${id}"]`);
  await row.waitFor();
  assert.match(await row.textContent(), /every day at 00:00 UTC/);
  assert.match(await row.locator('td').nth(1).textContent(), /\d{4}-\d\d-\d\d/, 'no next run shown');
  await row.locator('.enabled-toggle').uncheck();
  await row.getByText('paused').waitFor();
  assert.equal((await apiCall('GET', `/api/v1/scheduled-tasks/${id}`)).json.enabled, false);
  await row.locator('.enabled-toggle').check();
  await row.getByText('paused').waitFor({ state: 'detached' });
  await shot(page, 'schedules');

  await row.getByRole('button', { name: 'Trigger now' }).click();
  await page.getByText(/triggered: task task-/).waitFor();
  await row.getByRole('link', { name: 'Executions' }).click();
  const exec = page.locator('#execution-table tr[data-execution-id]').first();
  await exec.waitFor();
  assert.match(await exec.textContent(), /manual/);
  await page.locator('#execution-table .badge[data-status="success"]').first().waitFor();
  await shot(page, 'schedule-detail');
  await exec.locator('a').click();
  await page.locator('.badge[data-status="completed"]').waitFor();

  // Edit: a new cron expression, described in words on the schedule's page.
  await page.goto(`${URL}/#/schedules/${id}/edit`);
  await page.fill('#cron-expr', '30 2 * * 1');
  await page.locator('#cron-expr-hint', { hasText: 'at 02:30 UTC on Monday' }).waitFor();
  await page.click('#save-schedule');
  await page.waitForURL(new RegExp(`#/schedules/${id}$`));
  await page.getByText('at 02:30 UTC on Monday').waitFor();
  assert.equal((await apiCall('GET', `/api/v1/scheduled-tasks/${id}`)).json.cronExpr, '30 2 * * 1');

  await page.goto(`${URL}/#/schedules`);
  await row.getByRole('button', { name: 'Delete' }).click();
  await page.getByRole('dialog', { name: 'Delete schedule?' }).getByRole('button', { name: 'Delete' }).click();
  await row.waitFor({ state: 'detached' });
  assert.equal((await apiCall('GET', `/api/v1/scheduled-tasks/${id}`)).status, 404);
}, { skip: schedulesApi.status === 404 ? 'this build has no /api/v1/scheduled-tasks' : undefined });

await test('works on a 375 px phone screen without sideways scrolling', async (page) => {
  await page.setViewportSize({ width: 375, height: 800 });
  for (const [hash, name] of [['#/tasks', 'mobile-tasks'], ['#/tasks/new', 'mobile-new-task'], ['#/schedules', 'mobile-schedules']]) {
    await page.goto(`${URL}/${hash}`);
    await page.locator('h1').first().waitFor();
    await page.waitForTimeout(500);
    const width = await page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(width <= 375, `${hash} is ${width}px wide`);
    await shot(page, name);
  }
  const list = await apiCall('GET', '/api/v1/tasks?status=failed&limit=1');
  await page.goto(`${URL}/#/tasks/${list.json.tasks[0].taskId}`);
  await page.locator('#failed-table tr.failed-row').first().waitFor();
  assert.ok(await page.evaluate(() => document.documentElement.scrollWidth) <= 375);
  await shot(page, 'mobile-task-detail');
});

await test('keyboard: every form field has a label and the form submits with Enter', async (page) => {
  await page.goto(`${URL}/#/tasks/new`);
  await page.locator('#images').waitFor();
  assert.equal(await page.evaluate(() => document.activeElement.id), 'images', 'the images field is not focused first');
  await page.locator('details.more summary').click();
  const unlabelled = await page.evaluate(() => [...document.querySelectorAll('input, select, textarea')]
    .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')).map((el) => el.id || el.outerHTML));
  assert.deepEqual(unlabelled, []);
  await page.focus('#images');
  await page.keyboard.type('nginx:1.27');
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'batch-size');
  await page.keyboard.press('Enter');
  await page.waitForURL(/#\/tasks\/task-/);
});

await test('with auth on: login, a viewer sees no mutating buttons, a bad token returns to login', async (page, context) => {
  const admin = { base: AUTH_URL, token: process.env.PREWARM_ADMIN_TOKEN };
  const running = await createTask({ images: ['slow/viewer:1'], batchSize: 1 }, admin);
  await page.goto(`${AUTH_URL}/`);
  await page.waitForURL(/#\/login$/);
  await page.getByLabel('API token').waitFor();
  assert.equal(await page.locator('#login-error').textContent(), '', 'a first visit is greeted with an error');
  assert.equal(await page.locator('#nav').isVisible(), false);
  await page.getByLabel('API token').fill('not-a-token');
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByText('That token was not accepted.').waitFor();
  await shot(page, 'login');

  await page.getByLabel('API token').fill(process.env.PREWARM_VIEWER_TOKEN);
  await page.getByRole('button', { name: 'Log in' }).click();
  const card = page.locator(`li[data-task-id="${running}"]`);
  await card.waitFor();
  assert.match(await page.locator('#user').textContent(), /ui-viewer · viewer/);
  const me = await apiCall('GET', '/api/v1/whoami', null, { base: AUTH_URL, token: process.env.PREWARM_VIEWER_TOKEN });
  assert.deepEqual({ name: me.json.name, role: me.json.role, auth: me.json.auth }, { name: 'ui-viewer', role: 'viewer', auth: true });
  assert.equal(await page.locator('#new-task').count(), 0);
  assert.equal(await card.getByRole('button', { name: 'Cancel' }).count(), 0);
  await card.locator('a.task-id').click();
  await page.locator('.badge[data-status="running"]').waitFor();
  assert.equal(await page.locator('#cancel-task').count(), 0);
  await page.goto(`${AUTH_URL}/#/schedules`);
  await page.locator('h1', { hasText: 'Schedules' }).waitFor();
  assert.equal(await page.locator('#new-schedule').count(), 0);
  assert.ok(!page.url().includes(process.env.PREWARM_VIEWER_TOKEN), 'token in the URL');
  await shot(page, 'viewer');

  // An admin sees them; a token that stops working sends the user back to login.
  await page.click('text=Log out');
  await page.getByLabel('API token').fill(admin.token);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.locator('#new-task').waitFor();
  await page.locator(`li[data-task-id="${running}"]`).getByRole('button', { name: 'Cancel' }).waitFor();
  await page.evaluate(() => sessionStorage.setItem('prewarm.token', 'revoked-token'));
  await page.waitForURL(/#\/login$/);
  await page.getByText('Your token was not accepted').waitFor();
  await apiCall('DELETE', `/api/v1/tasks/${running}`, null, admin);
}, { skip: AUTH_URL ? undefined : 'this build has no bearer tokens (prewarm serve --auth-tokens-file)' });

await test('the list filters by status and pages', async (page) => {
  await page.goto(`${URL}/#/tasks`);
  await page.locator('li[data-task-id]').first().waitFor();
  await page.selectOption('#status-filter', 'failed');
  await page.waitForURL(/#\/tasks\?status=failed$/);
  await page.waitForFunction(() => {
    const cards = [...document.querySelectorAll('li[data-task-id]')];
    return cards.length > 0 && cards.every((c) => c.dataset.status === 'failed');
  });
  const failed = (await apiCall('GET', '/api/v1/tasks?status=failed')).json.total;
  assert.equal(await page.locator('li[data-task-id]').count(), Math.min(failed, 10));
  await page.selectOption('#status-filter', '');
  for (let i = 0; (await apiCall('GET', '/api/v1/tasks')).json.total <= 10; i += 1) {
    await createTask({ images: [`paging/img${i}:1`], batchSize: 6 });
  }
  await page.getByRole('button', { name: 'Next →' }).click();
  await page.waitForURL(/offset=10$/);
  await page.getByText(/^11–\d+ of \d+$/).waitFor();
  assert.ok(await page.locator('li[data-task-id]').count() >= 1);
});

await test('the coverage page draws a nodes x images grid and a per-label summary', async (page) => {
  const id = await createTask({ images: ['coverage/app:1'], batchSize: 6 });
  for (let i = 0; i < 300; i += 1) {
    if ((await apiCall('GET', `/api/v1/tasks/${id}`)).json.status === 'completed') break;
    await page.waitForTimeout(100);
  }
  // Nodes report pulled images in their status a little after the pull ends.
  const query = `images=${encodeURIComponent('coverage/app:1')}&nodeSelector=${encodeURIComponent('pool=ui')}`;
  for (let i = 0; i < 300; i += 1) {
    if ((await apiCall('GET', `/api/v1/coverage?${query}`)).json.percentage === 100) break;
    await page.waitForTimeout(100);
  }
  await page.goto(`${URL}/#/tasks`);
  await page.getByRole('link', { name: 'Coverage' }).click();
  await page.getByRole('heading', { name: 'Coverage' }).waitFor();
  await page.fill('#coverage-images', 'coverage/app:1, coverage/never:1');
  await page.fill('#coverage-selector', 'pool=ui');
  await page.click('#coverage-show');
  await page.locator('#coverage-grid').waitFor();
  assert.equal(await page.locator('#coverage-grid tbody tr').count(), 6);
  assert.equal(await page.locator('#coverage-grid td.cell-present').count(), 6);
  assert.equal(await page.locator('#coverage-grid td.cell-missing').count(), 6);
  const row = page.locator('#coverage-images-table tr[data-image="coverage/app:1"]');
  assert.equal(await row.locator('td').nth(1).textContent(), '6/6');
  assert.match(await page.locator('#coverage-total').textContent(), /^50% of \(node, image\) pairs present on 6 Ready nodes/);
  assert.match(page.url(), /#\/coverage\?images=/, 'the query is in the URL');
  await shot(page, 'coverage');
  // An unknown image reference is the API's 400, shown as such.
  await page.fill('#coverage-images', 'Not An Image');
  await page.click('#coverage-show');
  await page.locator('#coverage-result .error-box').waitFor();
});

await test('the keep-warm list shows coverage, the last run and switches a policy off', async (page) => {
  const created = await apiCall('POST', '/api/v1/keep-warm',
    { name: 'ui pool', images: ['keepwarm/app:1'], nodeSelector: { pool: 'ui' }, batchSize: 6 });
  assert.equal(created.status, 201, JSON.stringify(created.json));
  const id = created.json.id;
  try {
    await page.goto(`${URL}/#/keep-warm`);
    const row = page.locator(`#policy-table tr[data-policy-id="${id}"]`);
    await row.waitFor();
    assert.match(await row.locator('th').textContent(), /ui pool/);
    // The policy warms its nodes at creation; the list follows without a reload.
    await page.waitForFunction((pid) => {
      const cell = document.querySelector(`#policy-table tr[data-policy-id="${pid}"] .policy-warm`);
      return cell && cell.textContent === '6/6 nodes warm';
    }, id, { polling: 200, timeout: 60_000 });
    await row.locator('a[href^="#/tasks/task-"]').waitFor();
    await shot(page, 'keep-warm');
    await row.locator('input.enabled-toggle').uncheck();
    await page.locator('.toast', { hasText: 'ui pool disabled.' }).waitFor();
    assert.equal((await apiCall('GET', `/api/v1/keep-warm/${id}`)).json.enabled, false);
  } finally {
    await apiCall('DELETE', `/api/v1/keep-warm/${id}`);
  }
});

await test('the live list mid-task (the README screenshot)', async (page) => {
  const id = await createTask({ images: ['busybox:1.36', 'alpine:3.20'], batchSize: 1 });
  await page.goto(`${URL}/#/tasks`);
  await page.waitForFunction((taskId) => {
    const bar = document.querySelector(`li[data-task-id="${taskId}"] .bar`);
    const now = bar && Number(bar.getAttribute('aria-valuenow'));
    return now >= 30 && now < 100;
  }, id, { polling: 100, timeout: 40_000 });
  await shot(page, 'tasks-overview');
});

// Its own browser: the one that accepts the test certificate's key and no other.
const tlsBrowser = TLS_URL && await launch([`--ignore-certificate-errors-spki-list=${process.env.PREWARM_TLS_SPKI}`]);
await test('over HTTPS: log in, create a task in the form and follow it live to completion', async (page) => {
  await page.goto(`${TLS_URL}/`);
  await page.waitForURL(/#\/login$/);
  assert.deepEqual(await page.evaluate(() => [location.protocol, window.isSecureContext]), ['https:', true]);
  await page.getByLabel('API token').fill(process.env.PREWARM_ADMIN_TOKEN);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.locator('#new-task').waitFor();
  assert.match(await page.locator('#user').textContent(), /ui-admin · admin/);
  assert.match(await page.locator('#replica').textContent(), /^replica \S+ \(leader\)$/);

  await page.click('#new-task');
  await page.fill('#images', 'https/app:1'); // on no node yet: every node pulls it
  await page.fill('#batch-size', '2');
  await page.click('#add-label');
  await page.locator('.selector-key').last().fill('pool');
  await page.locator('.selector-value').last().fill('ui');
  await page.click('#submit-task');
  await page.waitForURL(/#\/tasks\/task-\d{8}-[a-z0-9]{6}$/);
  const id = decodeURIComponent(page.url().split('#/tasks/')[1]);
  await page.locator('.live-mode', { hasText: '· live' }).waitFor();
  await page.locator('.badge[data-status="completed"]').waitFor({ timeout: 60_000 });
  assert.equal(await page.locator('.percent.big').textContent(), '100%');
  assert.match(await page.locator('#chart-desc').textContent(), /^6 of 6 nodes completed, 0 failed/);
  const task = await apiCall('GET', `/api/v1/tasks/${id}`, null, { base: TLS_URL, token: process.env.PREWARM_ADMIN_TOKEN });
  assert.equal(task.json.status, 'completed');
  assert.equal(task.json.createdBy, 'ui-admin');
  await shot(page, 'task-detail-https');
}, { on: tlsBrowser, skip: TLS_URL ? undefined : 'no HTTPS instance (this build has no bearer tokens)' });

if (tlsBrowser) await tlsBrowser.close();
await browser.close();
const failed = results.filter((r) => r.status === 'FAIL');
const skipped = results.filter((r) => r.status === 'SKIP');
console.log(`\n${results.length - failed.length - skipped.length} passed, ${failed.length} failed, ${skipped.length} skipped; screenshots in ${SHOTS}`);
process.exit(failed.length ? 1 : 0);

// New task: the create form. Images are checked as you type with the API's
// own grammar (image-ref.js); whatever the server still rejects is shown next
// to the field it names. Submitting lands on the new task's page.

import { api, ApiError } from '../api.js';
import { h, replace, uid } from '../dom.js';
import { validateImageList } from '../image-ref.js';
import { errorBox } from '../widgets.js';

const LABEL_NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** Why a Kubernetes label key is invalid, or null. */
export function labelKeyError(key) {
  if (!key) return 'label key must not be empty';
  const slash = key.lastIndexOf('/');
  const prefix = slash >= 0 ? key.slice(0, slash) : null;
  const name = slash >= 0 ? key.slice(slash + 1) : key;
  if (prefix !== null && (!prefix || prefix.length > 253 || !DNS_SUBDOMAIN.test(prefix))) return `label key prefix ${JSON.stringify(prefix)} must be a DNS subdomain (lower case, at most 253 characters)`;
  if (!name || name.length > 63 || !LABEL_NAME.test(name)) return `label key name ${JSON.stringify(name)} must be 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit`;
  return null;
}

/** Why a Kubernetes label value is invalid, or null. */
export function labelValueError(value) {
  if (value === '') return null;
  if (value.length > 63 || !LABEL_NAME.test(value)) return `label value ${JSON.stringify(value)} must be at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit`;
  return null;
}

/** A labelled input with hint and error line wired through aria-describedby. */
function field(labelText, input, hint) {
  const id = input.id || uid('f');
  input.id = id;
  const hintEl = hint ? h('p', { id: `${id}-hint`, class: 'hint' }, hint) : null;
  const error = h('p', { id: `${id}-error`, class: 'field-error', 'aria-live': 'polite' });
  input.setAttribute('aria-describedby', [hintEl && hintEl.id, error.id].filter(Boolean).join(' '));
  const el = h('div', { class: 'field' }, h('label', { for: id }, labelText), input, hintEl, error);
  return {
    el,
    input,
    setError(msg) {
      error.textContent = msg || '';
      if (msg) input.setAttribute('aria-invalid', 'true'); else input.removeAttribute('aria-invalid');
    },
  };
}

function numberInput(id, value, min, max) {
  return h('input', { id, type: 'number', inputmode: 'numeric', min, max, step: 1, value: String(value) });
}

function select(id, options, value) {
  return h('select', { id }, options.map((o) => h('option', { value: o, selected: o === value }, o)));
}

/**
 * The task fields (also used for a schedule's task config). initial is a task
 * create body; returns {el, read(), showServerError(details), focusFirstError()}.
 */
export function taskFields(initial = {}) {
  const images = field('Images (one per line)', h('textarea', { id: 'images', rows: 5, spellcheck: 'false', autocapitalize: 'off', placeholder: 'nginx:1.27\nredis:7', required: true }),
    'Tags, digests (name@sha256:…) and registries with ports work; checked as you type.');
  images.input.value = (initial.images || []).join('\n');
  const imageProblems = h('ul', { class: 'image-problems', id: 'images-problems' });
  images.el.appendChild(imageProblems);

  const batch = field('Batch size (nodes pulling at once)', numberInput('batch-size', initial.batchSize ?? 10, 1, 1000));
  const priority = field('Priority (higher runs first)', numberInput('priority', initial.priority ?? 0, -1000, 1000));
  const retries = field('Retries per failed pull', numberInput('max-retries', initial.maxRetries ?? 0, 0, 10));
  const strategy = field('Retry strategy', select('retry-strategy', ['fixed', 'linear', 'exponential'], initial.retryStrategy || 'fixed'));
  const delay = field('Retry delay (seconds)', numberInput('retry-delay', initial.retryDelay ?? 30, 0, 3600));
  const policy = field('Pull policy', select('pull-policy', ['IfNotPresent', 'Always'], initial.pullPolicy || 'IfNotPresent'));
  const secrets = field('Image pull secrets', h('input', { id: 'pull-secrets', type: 'text', autocomplete: 'off', spellcheck: 'false', value: (initial.imagePullSecrets || []).join(', ') }),
    'Secret names in the service\'s job namespace, separated by commas.');
  const webhook = field('Webhook URL', h('input', { id: 'webhook', type: 'url', autocomplete: 'off', placeholder: 'https://ci.example.com/hooks/prewarm', value: initial.webhookUrl || '' }),
    'Receives a POST when the task ends.');
  const timeout = field('Task timeout (seconds, 0 = none)', numberInput('timeout-seconds', initial.timeoutSeconds ?? 0, 0, 604800));
  const taints = h('input', { id: 'tolerate-taints', type: 'checkbox', checked: initial.tolerateTaints ?? true });
  const pin = h('input', { id: 'pin-digests', type: 'checkbox', checked: initial.pinDigests ?? false });

  // Node selector rows.
  const rows = h('div', { class: 'selector-rows' });
  const selectorError = h('p', { id: 'selector-error', class: 'field-error', 'aria-live': 'polite' });
  const addRow = (key = '', value = '') => {
    const n = uid('sel');
    const k = h('input', { id: `${n}-key`, class: 'selector-key', type: 'text', value: key, autocomplete: 'off', spellcheck: 'false', placeholder: 'workload' });
    const v = h('input', { id: `${n}-value`, class: 'selector-value', type: 'text', value, autocomplete: 'off', spellcheck: 'false', placeholder: 'compute' });
    const row = h('div', { class: 'selector-row' },
      h('label', { for: k.id, class: 'visually-hidden' }, 'Label key'), k,
      h('span', { 'aria-hidden': 'true' }, '='),
      h('label', { for: v.id, class: 'visually-hidden' }, 'Label value'), v,
      h('button', { type: 'button', class: 'btn btn-small', 'aria-label': 'Remove this label', on: { click: () => { row.remove(); validateSelector(); } } }, '×'));
    k.addEventListener('input', validateSelector);
    v.addEventListener('input', validateSelector);
    rows.appendChild(row);
    return k;
  };
  for (const [k, v] of Object.entries(initial.nodeSelector || {})) addRow(k, v);
  const selector = h('fieldset', { class: 'field selector', 'aria-describedby': 'selector-error' },
    h('legend', {}, 'Node selector (all labels must match; none = every node)'),
    rows,
    h('button', { type: 'button', class: 'btn btn-small', id: 'add-label', on: { click: () => addRow().focus() } }, '+ Add label'),
    selectorError);

  function readSelector() {
    const out = {};
    const problems = [];
    for (const row of rows.children) {
      const key = row.querySelector('.selector-key').value.trim();
      const value = row.querySelector('.selector-value').value.trim();
      if (!key && !value) continue;
      const err = labelKeyError(key) || labelValueError(value);
      if (err) problems.push(err);
      else if (key in out) problems.push(`label key ${JSON.stringify(key)} appears twice`);
      out[key] = value;
    }
    return { selector: out, problems };
  }
  function validateSelector() {
    const { problems } = readSelector();
    selectorError.textContent = problems.join('; ');
    return problems.length === 0;
  }

  function validateImages() {
    const { images: list, errors } = validateImageList(images.input.value);
    const touched = images.input.value.trim() !== '';
    replace(imageProblems, touched ? errors.map((e) => h('li', {}, e.line ? `Line ${e.line}: ${e.message}` : e.message)) : []);
    images.setError(touched && errors.length ? `${errors.length} problem${errors.length > 1 ? 's' : ''} in the image list` : '');
    return { list, errors };
  }
  images.input.addEventListener('input', validateImages);
  if (images.input.value) validateImages();

  const numbers = [[batch, 'batchSize'], [priority, 'priority'], [retries, 'maxRetries'], [delay, 'retryDelay'], [timeout, 'timeoutSeconds']];
  for (const [f] of numbers) f.input.addEventListener('input', () => checkNumber(f));
  function checkNumber(f) {
    const { input } = f;
    const v = Number(input.value);
    const min = Number(input.min);
    const max = Number(input.max);
    const ok = input.value !== '' && Number.isInteger(v) && v >= min && v <= max;
    f.setError(ok ? '' : `must be a whole number between ${min} and ${max}`);
    return ok;
  }

  const el = h('div', { class: 'task-fields' },
    images.el,
    h('div', { class: 'grid-2' }, batch.el, priority.el),
    selector,
    h('details', { class: 'more', open: Boolean(initial.webhookUrl || (initial.imagePullSecrets || []).length) },
      h('summary', {}, 'Retries, pull policy, secrets, webhook'),
      h('div', { class: 'grid-3' }, retries.el, strategy.el, delay.el),
      h('div', { class: 'grid-3' }, policy.el, timeout.el,
        h('div', { class: 'field checkbox' }, taints, h('label', { for: 'tolerate-taints' }, 'Include tainted nodes'),
          pin, h('label', { for: 'pin-digests', title: 'The first successful pull of each tag fixes its digest; every node gets the same bytes.' }, 'Pin digests'))),
      secrets.el,
      webhook.el));

  const byField = {
    images, batchSize: batch, priority, maxRetries: retries, retryStrategy: strategy, retryDelay: delay,
    pullPolicy: policy, imagePullSecrets: secrets, webhookUrl: webhook, timeoutSeconds: timeout,
  };

  return {
    el,
    /** {body, ok}: the create body, and whether every client-side check passed. */
    read() {
      const { list, errors } = validateImages();
      if (errors.length && !images.input.value.trim()) images.setError('at least one image is required');
      let ok = errors.length === 0;
      for (const [f] of numbers) ok = checkNumber(f) && ok;
      ok = validateSelector() && ok;
      const hook = webhook.input.value.trim();
      if (hook && !/^https?:\/\/[^\s/]+/i.test(hook)) { webhook.setError('must be an http:// or https:// URL'); ok = false; } else webhook.setError('');
      const { selector: nodeSelector } = readSelector();
      const body = {
        images: list,
        batchSize: Number(batch.input.value),
        priority: Number(priority.input.value),
        maxRetries: Number(retries.input.value),
        retryStrategy: strategy.input.value,
        retryDelay: Number(delay.input.value),
        pullPolicy: policy.input.value,
        tolerateTaints: taints.checked,
        pinDigests: pin.checked,
        timeoutSeconds: Number(timeout.input.value),
      };
      // Sent even when empty, so editing a schedule (whose taskConfig merges) can clear them.
      body.nodeSelector = nodeSelector;
      body.imagePullSecrets = secrets.input.value.split(/[\s,]+/).filter(Boolean);
      if (hook) body.webhookUrl = hook;
      return { body, ok };
    },
    /** Puts a server validation message next to the field it names; false when it names none. */
    showServerError(details) {
      const m = /^(?:taskConfig\.)?([A-Za-z]+)/.exec(details || '');
      const key = m && m[1];
      if (key === 'nodeSelector') { selectorError.textContent = details; return true; }
      const f = key && byField[key];
      if (!f) return false;
      f.setError(details);
      if (f.el.closest('details')) f.el.closest('details').open = true;
      return true;
    },
    focusFirstError() {
      const bad = el.querySelector('[aria-invalid="true"]');
      if (bad) { if (bad.closest('details')) bad.closest('details').open = true; bad.focus(); }
    },
  };
}

export function render(root, _route, ctx) {
  if (!ctx.canMutate) {
    root.appendChild(h('p', { class: 'error-box', role: 'alert' }, 'Your role may only read tasks.'));
    return undefined;
  }
  const fields = taskFields();
  const formError = h('div', { id: 'form-error' });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary', id: 'submit-task' }, 'Start prewarm');
  const form = h('form', { class: 'card form', novalidate: true, 'aria-labelledby': 'new-task-title' },
    h('h1', { id: 'new-task-title' }, 'New task'),
    fields.el,
    formError,
    h('div', { class: 'actions' },
      submit,
      h('button', { type: 'reset', class: 'btn' }, 'Reset')));
  form.addEventListener('reset', () => setTimeout(() => { replace(root); render(root, _route, ctx); }));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    replace(formError);
    const { body, ok } = fields.read();
    if (!ok) { fields.focusFirstError(); return; }
    submit.disabled = true;
    try {
      const created = await api.createTask(body);
      ctx.notify(`${created.taskId} created.`);
      ctx.navigate(`#/tasks/${encodeURIComponent(created.taskId)}`);
    } catch (e) {
      submit.disabled = false;
      if (!(e instanceof ApiError) || !fields.showServerError(e.details)) replace(formError, errorBox(e));
      fields.focusFirstError();
    }
  });
  root.appendChild(form);
  fields.el.querySelector('#images').focus();
  return undefined;
}

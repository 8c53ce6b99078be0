// Token login: the token is kept in sessionStorage (gone when the tab closes).

import { h } from '../dom.js';
import { ApiError } from '../api.js';

export function render(root, _route, ctx) {
  const message = sessionStorage.getItem('prewarm.loginMessage');
  sessionStorage.removeItem('prewarm.loginMessage');
  const error = h('p', { id: 'login-error', class: 'field-error', role: 'alert' }, message || '');
  const input = h('input', { id: 'token', name: 'token', type: 'password', autocomplete: 'off', required: true, 'aria-describedby': 'login-help login-error', spellcheck: 'false' });
  const form = h('form', { class: 'card login', novalidate: true },
    h('h1', {}, 'Log in to prewarm'),
    h('label', { for: 'token' }, 'API token'),
    input,
    h('p', { id: 'login-help', class: 'muted' }, 'The bearer token your administrator gave you. It stays in this browser tab only.'),
    error,
    h('button', { type: 'submit', class: 'btn btn-primary' }, 'Log in'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const token = input.value.trim();
    if (!token) { error.textContent = 'Enter a token.'; input.focus(); return; }
    error.textContent = '';
    try {
      await ctx.login(token);
      location.hash = '#/tasks';
    } catch (e) {
      ctx.logout();
      error.textContent = e instanceof ApiError && e.status === 401 ? 'That token was not accepted.' : e.message;
      input.focus();
    }
  });
  root.appendChild(form);
  input.focus();
}

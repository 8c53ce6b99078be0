// The JS image reference check must agree with the server's: every literal
// accept(...)/reject(...) case of crates/image-ref/src/lib.rs (the parser of the service and kube-sim) is run here.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { imageRefError, validateImageList } from '../js/image-ref.js';

const rust = readFileSync(new URL('../../crates/image-ref/src/lib.rs', import.meta.url), 'utf8');
const lit = (s) => JSON.parse(`"${s}"`);
const accepted = [...rust.matchAll(/accept\(\s*"((?:[^"\\]|\\.)*)"/g)].map((m) => lit(m[1]));
const rejected = [...rust.matchAll(/reject\("((?:[^"\\]|\\.)*)"\)/g)].map((m) => lit(m[1]));
const HEX64 = '0123456789abcdef'.repeat(4);

test('the Rust test cases were found', () => {
  assert.ok(accepted.length >= 20, `${accepted.length} accept cases`);
  assert.ok(rejected.length >= 40, `${rejected.length} reject cases`);
});

test('accepts what the server accepts', () => {
  for (const s of [...accepted, `nginx@sha256:${HEX64}`, `gcr.io/a/b:1@sha256:${HEX64}`, 'localhost:5000/a', '[::1]:5000/foo']) {
    assert.equal(imageRefError(s), null, s);
  }
});

test('rejects what the server rejects', () => {
  const extra = [HEX64, `nginx@sha256:${HEX64.toUpperCase()}`, `nginx@sha256:${HEX64}0`, `nginx:${'a'.repeat(129)}`, `a/${'b'.repeat(255)}`, 'nginx@md5:0123456789abcdef'];
  for (const s of [...rejected, ...extra]) assert.notEqual(imageRefError(s), null, s);
});

test('explains like the server', () => {
  assert.equal(imageRefError('Nginx'), 'repository name must be lowercase (component "Nginx")');
  assert.match(imageRefError('a..b'), /repository path component "a..b" must consist of lower-case letters/);
  assert.equal(imageRefError('foo/Bar'), 'repository name must be lowercase (component "Bar")');
  assert.equal(imageRefError('nginx:'), "tag after ':' must not be empty");
});

test('the list: lines, duplicates, blank lines, limits', () => {
  const r = validateImageList('nginx\n\n  redis:7  \nnginx\nBad');
  assert.deepEqual(r.images, ['nginx', 'redis:7', 'nginx', 'Bad']);
  assert.deepEqual(r.errors.map((e) => e.line), [4, 5]);
  assert.match(r.errors[0].message, /duplicate image "nginx"/);
  assert.equal(validateImageList('  \n').errors[0].message, 'at least one image is required');
  const many = Array.from({ length: 101 }, (_, i) => `img${i}`).join('\n');
  assert.match(validateImageList(many).errors[0].message, /at most 100 images/);
});

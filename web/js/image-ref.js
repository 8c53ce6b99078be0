// Image reference validation, a port of crates/image-ref/src/lib.rs
// (the distribution/reference grammar as the kubelet applies it), so the form
// flags the same references the API would reject, with the same reasons.

const NAME_TOTAL_LENGTH_MAX = 255;
const TAG_MAX_LEN = 128;
const DIGEST_MIN_HEX_LEN = 32;
const DIGEST_LENGTHS = { sha256: 64, sha384: 96, sha512: 128 };

const q = (s) => JSON.stringify(s);

/** Checks one reference; returns null when valid, else the reason (as the server words it). */
export function imageRefError(s) {
  if (s.length === 0) return 'reference must not be empty';
  if (/\s/u.test(s)) return 'reference must not contain whitespace';
  if (s.length === 64 && /^[0-9a-f]+$/.test(s)) {
    return 'a bare 64-character hexadecimal string is an image ID, not a repository name';
  }
  let nameAndTag = s;
  const at = s.indexOf('@');
  if (at >= 0) {
    const err = digestError(s.slice(at + 1));
    if (err) return err;
    nameAndTag = s.slice(0, at);
  }
  let name = nameAndTag;
  const colon = nameAndTag.lastIndexOf(':');
  const slash = nameAndTag.lastIndexOf('/');
  if (colon >= 0 && slash < colon) {
    const err = tagError(nameAndTag.slice(colon + 1));
    if (err) return err;
    name = nameAndTag.slice(0, colon);
  }
  if (!name) return 'repository name must not be empty';

  const [domain, path] = splitDomain(name);
  if (domain !== null) {
    const err = domainError(domain);
    if (err) return err;
  }
  const err = pathError(path);
  if (err) return err;

  let normDomain = domain === null || domain === 'index.docker.io' ? 'docker.io' : domain;
  const normPath = normDomain === 'docker.io' && !path.includes('/') ? `library/${path}` : path;
  const nameLen = new TextEncoder().encode(`${normDomain}/${normPath}`).length;
  if (nameLen > NAME_TOTAL_LENGTH_MAX) {
    return `repository name must not be more than ${NAME_TOTAL_LENGTH_MAX} characters (normalized as "${normDomain}/${normPath}" it has ${nameLen})`;
  }
  return null;
}

function splitDomain(name) {
  const i = name.indexOf('/');
  if (i < 0) return [null, name];
  const first = name.slice(0, i);
  if (first === 'localhost' || first.includes('.') || first.includes(':') || first !== first.toLowerCase()) {
    return [first, name.slice(i + 1)];
  }
  return [null, name];
}

function isDomainComponent(c) {
  return /^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$/.test(c);
}

function domainError(domain) {
  const bad = (what) => `invalid registry domain ${q(domain)}: ${what}`;
  let portPart;
  if (domain.startsWith('[')) {
    const close = domain.indexOf(']');
    if (close < 0) return bad("IPv6 address is missing its closing ']'");
    const inner = domain.slice(1, close);
    if (!inner || !/^[0-9A-Fa-f:]+$/.test(inner)) return bad("IPv6 address must consist of hexadecimal digits and ':'");
    portPart = domain.slice(close + 1);
  } else {
    const c = domain.indexOf(':');
    const host = c >= 0 ? domain.slice(0, c) : domain;
    portPart = c >= 0 ? domain.slice(c) : '';
    for (const component of host.split('.')) {
      if (!isDomainComponent(component)) {
        return bad("each dot-separated host component must consist of letters, digits and '-', and must start and end with a letter or digit");
      }
    }
  }
  if (!portPart) return null;
  if (/^:[0-9]+$/.test(portPart)) return null;
  return bad('port must be a non-empty sequence of digits');
}

const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;

function pathError(path) {
  for (const component of path.split('/')) {
    if (!component) return "repository path must not have empty components (leading, trailing or doubled '/')";
    if (!PATH_COMPONENT.test(component)) {
      if (PATH_COMPONENT.test(component.toLowerCase()) && /^[\x00-\x7f]*$/.test(component)) {
        return `repository name must be lowercase (component ${q(component)})`;
      }
      return `repository path component ${q(component)} must consist of lower-case letters and digits, separated by '.', '_', '__' or one or more '-', and must start and end with a letter or digit`;
    }
  }
  return null;
}

function tagError(tag) {
  if (!tag) return "tag after ':' must not be empty";
  const len = new TextEncoder().encode(tag).length;
  if (len > TAG_MAX_LEN) return `tag must be at most ${TAG_MAX_LEN} characters (got ${len})`;
  if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]*$/.test(tag)) {
    return `tag ${q(tag)} must consist of letters, digits, '_', '.' and '-', and must not start with '.' or '-'`;
  }
  return null;
}

function digestError(digest) {
  if (!digest) return "digest after '@' must not be empty";
  const c = digest.indexOf(':');
  if (c < 0) return `digest ${q(digest)} must have the form algorithm:hex (e.g. sha256:…)`;
  const algorithm = digest.slice(0, c);
  const hex = digest.slice(c + 1);
  const algorithmOk = algorithm.length > 0 && algorithm.split(/[+._-]/).every((part) => /^[A-Za-z][A-Za-z0-9]*$/.test(part));
  if (!algorithmOk) return `digest algorithm ${q(algorithm)} is invalid`;
  if (hex.length < DIGEST_MIN_HEX_LEN || !/^[0-9A-Fa-f]+$/.test(hex)) {
    return `digest ${q(digest)} must have at least ${DIGEST_MIN_HEX_LEN} hexadecimal characters after the algorithm`;
  }
  const len = DIGEST_LENGTHS[algorithm];
  if (!len) return `digest algorithm ${q(algorithm)} is not supported (use sha256, sha384 or sha512)`;
  if (hex.length !== len || /[A-F]/.test(hex)) return `${algorithm} digest must be exactly ${len} lower-case hexadecimal characters`;
  return null;
}

/**
 * Validates the images textarea: one reference per line, blank lines ignored.
 * Returns {images, errors: [{line, image, message}]}, with the API's rules
 * (1..=100 references, valid, no duplicates) applied.
 */
export function validateImageList(text) {
  const images = [];
  const errors = [];
  const seen = new Set();
  text.split('\n').forEach((raw, i) => {
    const image = raw.trim();
    if (!image) return;
    const err = imageRefError(image);
    if (err) errors.push({ line: i + 1, image, message: `invalid image reference ${q(image)}: ${err}` });
    else if (seen.has(image)) errors.push({ line: i + 1, image, message: `duplicate image ${q(image)}` });
    seen.add(image);
    images.push(image);
  });
  if (images.length === 0) errors.push({ line: 0, image: '', message: 'at least one image is required' });
  if (images.length > 100) errors.push({ line: 0, image: '', message: `at most 100 images (got ${images.length})` });
  return { images, errors };
}

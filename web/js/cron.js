// Cron expressions in words: "every day at 00:00 UTC". Covers the macros and
// the common 5-field shapes; anything else is described field by field.

const MACROS = {
  '@yearly': '0 0 1 1 *',
  '@annually': '0 0 1 1 *',
  '@monthly': '0 0 1 * *',
  '@weekly': '0 0 * * 0',
  '@daily': '0 0 * * *',
  '@midnight': '0 0 * * *',
  '@hourly': '0 * * * *',
};
const DAYS = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday', 'Sunday'];
const DAY_ABBR = { sun: 0, mon: 1, tue: 2, wed: 3, thu: 4, fri: 5, sat: 6 };
const MONTHS = ['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September', 'October', 'November', 'December'];
const MONTH_ABBR = { jan: 1, feb: 2, mar: 3, apr: 4, may: 5, jun: 6, jul: 7, aug: 8, sep: 9, oct: 10, nov: 11, dec: 12 };
const FIELDS = [
  { name: 'minute', min: 0, max: 59 },
  { name: 'hour', min: 0, max: 23 },
  { name: 'day-of-month', min: 1, max: 31 },
  { name: 'month', min: 1, max: 12, names: MONTH_ABBR },
  { name: 'day-of-week', min: 0, max: 7, names: DAY_ABBR },
];

const pad = (n) => String(n).padStart(2, '0');
const ordinal = (n) => {
  const v = n % 100;
  const suffix = v >= 11 && v <= 13 ? 'th' : ({ 1: 'st', 2: 'nd', 3: 'rd' }[n % 10] || 'th');
  return `${n}${suffix}`;
};

function value(token, field) {
  const lower = token.toLowerCase();
  if (field.names && lower in field.names) return field.names[lower];
  if (!/^\d+$/.test(token)) throw new Error(`${field.name}: ${JSON.stringify(token)} is not a number`);
  const n = Number(token);
  if (n < field.min || n > field.max) throw new Error(`${field.name}: ${n} is outside ${field.min}-${field.max}`);
  return n;
}

/** Parses one field into {any, step, items: [{from, to}]} or throws with the reason. */
function parseField(text, field) {
  if (text === '*' || text === '?') return { any: true };
  const items = [];
  for (const part of text.split(',')) {
    const [range, stepText] = part.split('/');
    let step = 1;
    if (stepText !== undefined) {
      if (!/^\d+$/.test(stepText) || Number(stepText) === 0) throw new Error(`${field.name}: bad step ${JSON.stringify(stepText)}`);
      step = Number(stepText);
    }
    let from;
    let to;
    if (range === '*') { from = field.min; to = field.max; } else if (range.includes('-')) {
      const [a, b] = range.split('-');
      from = value(a, field); to = value(b, field);
      if (from > to) throw new Error(`${field.name}: range ${range} runs backwards`);
    } else {
      from = value(range, field);
      to = stepText !== undefined ? field.max : from;
    }
    items.push({ from, to, step, star: range === '*' });
  }
  return { any: false, items };
}

function single(f) {
  return !f.any && f.items.length === 1 && f.items[0].from === f.items[0].to ? f.items[0].from : null;
}

function everyN(f) {
  return !f.any && f.items.length === 1 && f.items[0].star && f.items[0].step > 1 ? f.items[0].step : null;
}

function list(f, nameOf) {
  return f.items.map((it) => {
    let s = it.from === it.to ? nameOf(it.from) : `${nameOf(it.from)} through ${nameOf(it.to)}`;
    if (it.step > 1) s = it.star ? `every ${it.step}` : `every ${it.step} from ${s}`;
    return s;
  }).join(', ');
}

/** Parses a cron expression; returns null when valid, else the reason. */
export function cronError(expr) {
  try { parse(expr); return null; } catch (e) { return e.message; }
}

function parse(expr) {
  const text = (expr || '').trim();
  if (!text) throw new Error('cron expression must not be empty');
  if (text.startsWith('@')) {
    if (!(text.toLowerCase() in MACROS)) throw new Error(`unknown macro ${JSON.stringify(text)} (use ${Object.keys(MACROS).join(', ')})`);
    return parse(MACROS[text.toLowerCase()]);
  }
  const parts = text.split(/\s+/);
  if (parts.length !== 5) throw new Error(`expected 5 fields (minute hour day-of-month month day-of-week), got ${parts.length}`);
  return parts.map((p, i) => parseField(p, FIELDS[i]));
}

/** "every day at 00:00 UTC", "every 15 minutes", "at 02:30 on Monday, Friday (Europe/Berlin)". */
export function describeCron(expr, timezone = 'UTC') {
  let fields;
  try { fields = parse(expr); } catch { return ''; }
  const [min, hour, dom, month, dow] = fields;
  const tz = timezone || 'UTC';
  const m = single(min);
  const hr = single(hour);

  let time;
  if (m !== null && hr !== null) time = `at ${pad(hr)}:${pad(m)} ${tz}`;
  else if (min.any && hour.any) time = 'every minute';
  else if (everyN(min) && hour.any) time = `every ${everyN(min)} minutes`;
  else if (m !== null && hour.any) time = m === 0 ? 'every hour' : `every hour at minute ${m}`;
  else if (m !== null && everyN(hour)) time = `every ${everyN(hour)} hours at minute ${m}`;
  else {
    const mins = min.any ? 'every minute' : `at minute ${list(min, String)}`;
    const hours = hour.any ? '' : ` past hour ${list(hour, String)}`;
    time = `${mins}${hours}`;
  }
  const timeNeedsTz = !time.endsWith(tz);

  const dayParts = [];
  if (!dom.any) dayParts.push(`on the ${list(dom, ordinal)} of the month`);
  if (!dow.any) dayParts.push(`on ${list(dow, (d) => DAYS[d])}`);
  if (!month.any) dayParts.push(`in ${list(month, (mo) => MONTHS[mo - 1])}`);

  let text;
  if (dayParts.length === 0) {
    text = time.startsWith('at ') ? `every day ${time}` : time;
  } else {
    text = `${time} ${dayParts.join(dom.any || dow.any ? ' ' : ' or ')}`;
  }
  if (timeNeedsTz && (!hour.any || dayParts.length > 0)) text += ` (${tz})`;
  return text;
}

// Cron descriptions shown next to schedules.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { describeCron, cronError } from '../js/cron.js';

test('describes the common shapes', () => {
  const cases = [
    ['0 0 * * *', 'UTC', 'every day at 00:00 UTC'],
    ['@daily', 'UTC', 'every day at 00:00 UTC'],
    ['@hourly', 'UTC', 'every hour'],
    ['*/15 * * * *', 'UTC', 'every 15 minutes'],
    ['30 2 * * 1,5', 'Europe/Berlin', 'at 02:30 Europe/Berlin on Monday, Friday'],
    ['0 3 1 * *', 'UTC', 'at 03:00 UTC on the 1st of the month'],
    ['0 */6 * * *', 'UTC', 'every 6 hours at minute 0 (UTC)'],
    ['0 9-17 * * mon-fri', 'UTC', 'at minute 0 past hour 9 through 17 on Monday through Friday (UTC)'],
    ['0 0 1 1 *', 'UTC', 'at 00:00 UTC on the 1st of the month in January'],
  ];
  for (const [expr, tz, words] of cases) assert.equal(describeCron(expr, tz), words, expr);
});

test('flags what is not a cron expression', () => {
  assert.equal(cronError('0 0 * * *'), null);
  assert.match(cronError('0 0 * *'), /expected 5 fields/);
  assert.match(cronError('61 0 * * *'), /minute: 61 is outside 0-59/);
  assert.match(cronError('@sometimes'), /unknown macro/);
  assert.match(cronError('*/0 * * * *'), /bad step/);
  assert.equal(describeCron('nonsense'), '');
});

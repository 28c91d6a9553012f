import { test } from 'node:test';
import assert from 'node:assert/strict';
import { desired } from './rule.js';

const w = (metric, values) => ({ metric, values: Float64Array.from(values) });

test('per replica: enough replicas to bring the mean to the target', () => {
  assert.deepEqual(desired({ target: 0.5 }, 4, [w('cpu', [0.75])])[0], 6);
  assert.deepEqual(desired({ target: 0.5 }, 4, [w('cpu', [0.25])])[0], 2);
});

test('per total: the sum of the series over the target', () => {
  const [n, reason] = desired({ target: 10, per: 'total' }, 1, [w('app.load', [45])]);
  assert.equal(n, 5);
  assert.equal(reason, 'app.load mean 45.000 vs target 10: ceil(45.000 / 10) = 5 (javascript)');
});

test('a bad target and a missing window are the contract errors', () => {
  assert.throws(() => desired({ target: 0 }, 1, [w('m', [1])]), (e) => e.payload.tag === 'bad-config');
  assert.throws(() => desired({ target: 1 }, 1, [w('m', [])]), (e) => e.payload.tag === 'invalid-input');
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { samples } from './logic.js';

test('reports the configured number', () => {
  assert.deepEqual(samples('x', { value: 3 }), [['x.value', 3]]);
  assert.throws(() => samples('x', {}), (e) => e.payload.tag === 'bad-config');
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { desired } from './logic.js';

test('enough replicas for the load', () => {
  assert.equal(desired(0.5, 4, 0.75), 6);
  assert.equal(desired(0.5, 4, 0.25), 2);
  assert.throws(() => desired(0, 1, 1), (e) => e.payload.tag === 'bad-config');
});

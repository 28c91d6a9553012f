import { test } from 'node:test';
import assert from 'node:assert/strict';
import { apply } from './logic.js';

test('records the target', () => {
  assert.deepEqual(apply(1, 3), [3, 'recorded 1 → 3 replicas']);
});

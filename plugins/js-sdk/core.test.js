import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PluginError, badConfig, exportPolicy, meanOf, parseJson, window } from './core.js';

const w = (values, timestampsMs = values.map((_, i) => i * 1000)) => ({ metric: 'm', values, timestampsMs });

test('window statistics: an empty window is unknown, not zero', () => {
  assert.equal(window.mean(w([])), undefined);
  assert.equal(window.mean(w([1, 2, 3])), 2);
  assert.equal(window.max(w([1, 5, 3])), 5);
  assert.equal(window.last(w([1, 5, 3])), 3);
  // The Rust SDK's answers (plugins/sdk/src/lib.rs): linear interpolation, resets counted.
  assert.equal(window.percentile(w([1, 2, 3, 4]), 50), 2.5);
  assert.equal(window.percentile(w([4, 1, 3, 2]), 100), 4);
  assert.equal(window.percentile(w([1, 2]), 101), undefined);
  assert.equal(window.rate(w([10, 20, 40])), 15);
  assert.equal(window.rate(w([100, 110, 5, 15])).toFixed(3), (25 / 3).toFixed(3));
  assert.equal(window.rate(w([10])), undefined);
  assert.deepEqual(window.points(w([7, 8])), [[0, 7], [1000, 8]]);
  assert.deepEqual(meanOf([w([1, 3]), { ...w([5]), metric: 'other' }]), { metric: 'm', value: 2 });
  assert.equal(meanOf([w([])]), undefined);
});

test('errors carry the contract variant; other exceptions become `other`, not a trap', () => {
  assert.deepEqual(badConfig('target').payload, { tag: 'bad-config', val: 'target' });
  assert.throws(() => parseJson('{', 'policy_config'), (e) => e instanceof PluginError && e.payload.val.startsWith('policy_config:'));
  assert.deepEqual(parseJson('', 'x'), {});
  const policy = exportPolicy({ evaluate: () => null.x, metadata: () => 'm' });
  assert.equal(policy.metadata(), 'm');
  assert.throws(() => policy.evaluate(), (e) => e.payload.tag === 'other' && e.payload.val.startsWith('TypeError'));
  const refusing = exportPolicy({ evaluate: () => { throw badConfig('no'); } });
  assert.throws(() => refusing.evaluate(), (e) => e.payload.tag === 'bad-config');
  // A host call's own error (componentize-js throws it with the `plugin-error` as `payload`).
  const host = new Error('(see error.payload)');
  host.payload = { tag: 'invalid-input', val: 'state value too large' };
  const storing = exportPolicy({ evaluate: () => { throw host; } });
  assert.throws(() => storing.evaluate(), (e) => e === host);
  // Entry points keep `this`: one may call a sibling.
  const polite = exportPolicy({ helper: () => 7, evaluate() { return this.helper(); } });
  assert.equal(polite.evaluate(), 7);
});

// Target tracking, in JavaScript: the same rule as the Rust `target-tracking` policy, built with
// componentize-js against `wit/` (world `policy-plugin`). `scripts/build-plugins` builds it.
import { exportPolicy, key, parseJson } from '../js-sdk/index.js';
import { desired } from './rule.js';

export const policy = exportPolicy({
  metadata() {
    return {
      name: 'js-target-tracking',
      version: '0.1.0',
      description: 'Keeps a metric at a target with the HPA\'s proportional rule (written in JavaScript).',
      configKeys: [
        key('target', 'the value to hold the metric at (per replica unless per = "total")', true),
        key('per', '`replica` (default) or `total`'),
        key('metric', "which of the group's metrics; default the first"),
      ],
    };
  },

  evaluate(ctx) {
    const params = parseJson(ctx.params, 'policy_config');
    // Units still starting carry no load yet: count the ready ones (as the HPA does).
    const serving = ctx.current.ready > 0 ? ctx.current.ready : ctx.current.replicas;
    const [replicas, reason] = desired(params, serving, ctx.windows);
    return { replicas, tier: undefined, reason };
  },
});

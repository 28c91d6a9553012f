// {{name}}: a scaling policy. The agent calls `evaluate` every interval of each group that uses
// it; the answer goes through the agent's guardrails before anything scales.
import { exportPolicy, invalidInput, key, meanOf, parseJson } from './sdk/index.js';
import { desired } from './logic.js';

export const policy = exportPolicy({
  metadata() {
    return {
      name: '{{name}}',
      version: '0.1.0',
      description: "Keeps the per-replica mean of the group's first metric at `target`.",
      configKeys: [key('target', 'the value one replica should carry', true)],
    };
  },

  evaluate(ctx) {
    const params = parseJson(ctx.params, 'policy_config');
    const mean = meanOf(ctx.windows);
    if (!mean) throw invalidInput('no data in the metric window');
    // Units still starting carry no load yet: count the ready ones (as the HPA does).
    const serving = ctx.current.ready > 0 ? ctx.current.ready : ctx.current.replicas;
    const replicas = desired(params.target, serving, mean.value);
    return { replicas, tier: undefined, reason: `mean ${mean.value.toFixed(3)} vs target ${params.target}` };
  },
});

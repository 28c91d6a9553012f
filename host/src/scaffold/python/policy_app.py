"""{{name}}: a scaling policy. The agent calls `evaluate` every interval of each group that uses
it; the answer goes through the agent's guardrails before anything scales."""
import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import policy
from wit_world.imports import types

import logic


class Policy(exports.Policy):
    def metadata(self) -> types.PluginMetadata:
        return types.PluginMetadata(
            name="{{name}}",
            version="0.1.0",
            description="Keeps the per-replica mean of the group's first metric at `target`.",
            config_keys=[types.ConfigKey("target", "the value one replica should carry", True)],
        )

    def evaluate(self, ctx: policy.Context) -> policy.Recommendation:
        params = json.loads(ctx.params or "{}")
        means = [sum(w.values) / len(w.values) for w in ctx.windows if w.values]
        if not means:
            raise Err(types.PluginError_InvalidInput("no data in the metric window"))
        # Units still starting carry no load yet: count the ready ones (as the HPA does).
        serving = ctx.current.ready if ctx.current.ready > 0 else ctx.current.replicas
        try:
            replicas = logic.desired(params.get("target"), serving, sum(means) / len(means))
        except ValueError as e:
            raise Err(types.PluginError_BadConfig(str(e)))
        return policy.Recommendation(replicas, None, f"mean {sum(means) / len(means):.3f} vs target {params['target']}")

"""Target tracking, in Python: the same rule as the Rust `target-tracking` policy, built with
componentize-py against `wit/` (world `policy-plugin`). `scripts/build-plugins` builds it."""
import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import policy
from wit_world.imports import types

import rule


class Policy(exports.Policy):
    def metadata(self) -> types.PluginMetadata:
        return types.PluginMetadata(
            name="py-target-tracking",
            version="0.1.0",
            description="Keeps a metric at a target with the HPA's proportional rule (written in Python).",
            config_keys=[
                types.ConfigKey("target", "the value to hold the metric at (per replica unless per = \"total\")", True),
                types.ConfigKey("per", "`replica` (default) or `total`", False),
                types.ConfigKey("metric", "which of the group's metrics; default the first", False),
            ],
        )

    def evaluate(self, ctx: policy.Context) -> policy.Recommendation:
        try:
            params = json.loads(ctx.params or "{}")
        except ValueError as e:
            raise Err(types.PluginError_BadConfig(f"policy_config: {e}"))
        replicas = ctx.current.ready if ctx.current.ready > 0 else ctx.current.replicas
        try:
            wanted, reason = rule.desired(params, replicas, [(w.metric, w.values) for w in ctx.windows])
        except rule.BadConfig as e:
            raise Err(types.PluginError_BadConfig(str(e)))
        except rule.NoData as e:
            raise Err(types.PluginError_InvalidInput(str(e)))
        return policy.Recommendation(wanted, None, reason)

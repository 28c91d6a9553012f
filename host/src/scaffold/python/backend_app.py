"""{{name}}: a backend. It provisions nothing: it keeps each group's target in the plugin's
persistent state (replace `logic.apply` with calls to your infrastructure)."""
import json

from wit_world import exports
from wit_world.exports import backend
from wit_world.imports import host, types

import logic


def _load(group: str) -> int:
    raw = host.state_get(group)
    return json.loads(raw) if raw is not None else 1


class Backend(exports.Backend):
    def metadata(self) -> types.PluginMetadata:
        return types.PluginMetadata(
            name="{{name}}",
            version="0.1.0",
            description="Records each group's target as its capacity.",
            config_keys=[],
        )

    def describe(self, group: backend.Group) -> types.Capacity:
        n = _load(group.name)
        return types.Capacity(n, n, 0, "")

    def scale(self, group: backend.Group, target: types.Target) -> backend.Outcome:
        after, detail = logic.apply(_load(group.name), target.replicas)
        host.state_set(group.name, json.dumps(after).encode())
        return backend.Outcome(types.Capacity(after, after, 0, ""), detail)

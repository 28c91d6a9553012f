"""{{name}}: a metric source. The agent calls `collect` every `interval` of its
`[plugins.{{name}}]` table and stores the samples, labelled `source={{name}}`. This one reports
the number `value` of its configuration as `{{name}}.value` (replace `logic.samples`)."""
import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host, types

import logic


class Source(exports.Source):
    def metadata(self) -> types.PluginMetadata:
        return types.PluginMetadata(
            name="{{name}}",
            version="0.1.0",
            description="Reports a configured number.",
            config_keys=[types.ConfigKey("value", "the number to report", True)],
        )

    def collect(self) -> list[types.Sample]:
        try:
            pairs = logic.samples("{{name}}", json.loads(host.config()))
        except ValueError as e:
            raise Err(types.PluginError_BadConfig(str(e)))
        return [types.Sample(metric, [], value, 0) for metric, value in pairs]

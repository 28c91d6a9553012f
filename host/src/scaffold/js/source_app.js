// {{name}}: a metric source. The agent calls `collect` every `interval` of its
// `[plugins.{{name}}]` table and stores the samples, labelled `source={{name}}`. This one reports
// the number `value` of its configuration as `{{name}}.value` (replace `logic.samples`).
import { config, exportSource, key } from './sdk/index.js';
import { samples } from './logic.js';

export const source = exportSource({
  metadata() {
    return {
      name: '{{name}}',
      version: '0.1.0',
      description: 'Reports a configured number.',
      configKeys: [key('value', 'the number to report', true)],
    };
  },

  collect() {
    return samples('{{name}}', config()).map(([metric, value]) => ({ metric, labels: [], value, timestampMs: 0n }));
  },
});

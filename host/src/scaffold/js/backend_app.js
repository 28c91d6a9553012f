// {{name}}: a backend. It provisions nothing: it keeps each group's target in the plugin's
// persistent state (replace `logic.apply` with calls to your infrastructure).
import { exportBackend, state } from './sdk/index.js';
import { apply } from './logic.js';

const load = (group) => state.get(group) ?? 1;

export const backend = exportBackend({
  metadata() {
    return { name: '{{name}}', version: '0.1.0', description: "Records each group's target as its capacity.", configKeys: [] };
  },

  describe(group) {
    const n = load(group.name);
    return { replicas: n, ready: n, tier: 0, tierName: '' };
  },

  scale(group, target) {
    const [after, detail] = apply(load(group.name), target.replicas);
    state.set(group.name, after);
    return { capacity: { replicas: after, ready: after, tier: 0, tierName: '' }, detail };
  },
});

// What to report, from the plugin's configuration, without the bindings (`npm test`).
import { badConfig } from './sdk/core.js';

export function samples(name, config) {
  if (typeof config.value !== 'number' || !Number.isFinite(config.value)) {
    throw badConfig(`[plugins.${name}.config] value must be a number, not ${JSON.stringify(config.value)}`);
  }
  return [[`${name}.value`, config.value]];
}

// The rule, without the bindings, so `npm test` checks it under node.
import { badConfig } from './sdk/core.js';

export function desired(target, replicas, mean) {
  if (typeof target !== 'number' || !(target > 0)) {
    throw badConfig(`policy_config.target must be a positive number, not ${JSON.stringify(target)}`);
  }
  return Math.ceil((Math.max(replicas, 1) * mean) / target);
}

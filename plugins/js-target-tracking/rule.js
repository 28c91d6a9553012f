// The HPA's proportional rule, without the bindings, so `node --test` checks it.
import { badConfig, invalidInput } from '../js-sdk/core.js';

/// `windows` are `{ metric, values }`. Returns `[replicas, reason]`.
export function desired(params, replicas, windows) {
  const { target, per = 'replica', metric } = params;
  if (typeof target !== 'number' || !(target > 0)) {
    throw badConfig(`policy_config.target must be a positive number, not ${JSON.stringify(target)}`);
  }
  if (per !== 'replica' && per !== 'total') {
    throw badConfig(`policy_config.per must be \`replica\` or \`total\`, not \`${per}\``);
  }
  const name = metric ?? windows[0]?.metric ?? '';
  const means = windows
    .filter((w) => w.metric === name && w.values.length)
    .map((w) => Array.from(w.values).reduce((a, b) => a + b, 0) / w.values.length);
  if (!means.length) throw invalidInput(`no data for ${name || 'the metric'} in the window`);
  let value, wanted, how;
  if (per === 'total') {
    value = means.reduce((a, b) => a + b, 0);
    wanted = Math.ceil(value / target);
    how = `${value.toFixed(3)} / ${target}`;
  } else {
    value = means.reduce((a, b) => a + b, 0) / means.length;
    wanted = Math.ceil((Math.max(replicas, 1) * value) / target);
    how = `${Math.max(replicas, 1)} × ${value.toFixed(3)} / ${target}`;
  }
  return [wanted, `${name} mean ${value.toFixed(3)} vs target ${target}: ceil(${how}) = ${wanted} (javascript)`];
}

// The pure half of the JavaScript plugin SDK: the contract's errors, entry points guarded, JSON
// parameters, window statistics. No import of the contract, so `node --test` runs it (and a
// plugin's own logic built on it) outside a component. `index.js` adds what needs the agent.

/// The contract's `plugin-error`: throw one from an entry point and the agent gets that
/// variant (`bad-config`, `unavailable`, `invalid-input`, `quota-exceeded`, `conflict`, `other`).
export class PluginError extends Error {
  constructor(tag, message) {
    super(`${tag}: ${message}`);
    this.name = 'PluginError';
    // componentize-js returns a thrown value's `payload` as the result's error.
    this.payload = { tag, val: String(message) };
  }
}

export const badConfig = (message) => new PluginError('bad-config', message);
export const unavailable = (message) => new PluginError('unavailable', message);
export const invalidInput = (message) => new PluginError('invalid-input', message);
export const quotaExceeded = (message) => new PluginError('quota-exceeded', message);
export const conflict = (message) => new PluginError('conflict', message);
export const other = (message) => new PluginError('other', message);

/// Any other exception (a TypeError, a bug) becomes `other` with its message and where it was
/// thrown, instead of a trap the agent counts as a fault and quarantines.
function guarded(fn) {
  return function (...args) {
    try {
      return fn.apply(this, args);
    } catch (e) {
      // A contract error already: ours, or one a host call threw (componentize-js's
      // ComponentError carries the host's `plugin-error` as its `payload`).
      if (e instanceof PluginError || typeof e?.payload?.tag === 'string') throw e;
      const where = String(e?.stack ?? '').split('\n').find((l) => l.includes('@') || l.includes('at ')) ?? '';
      throw other(`${e?.name ?? 'Error'}: ${e?.message ?? e}${where ? ` (${where.trim()})` : ''}`);
    }
  };
}

function guardAll(entry) {
  return Object.fromEntries(Object.entries(entry).map(([k, f]) => [k, typeof f === 'function' ? guarded(f) : f]));
}

/// `export const policy = exportPolicy({ metadata, evaluate })`, and the same for a source
/// (`collect`) and a backend (`describe`, `scale`): every entry point guarded as above.
export const exportPolicy = guardAll;
export const exportSource = guardAll;
export const exportBackend = guardAll;

/// Parses a JSON object the agent hands over (a group's `params`); errors name `what`.
export function parseJson(text, what) {
  if (!text || !text.trim()) return {};
  try {
    const v = JSON.parse(text);
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error('not a table');
    return v;
  } catch (e) {
    throw badConfig(`${what}: ${e.message}`);
  }
}

/// Statistics of one metric window (`{ timestampsMs, values }`). An empty window is
/// `undefined`: unknown is not zero.
export const window = {
  mean(w) {
    const v = w.values;
    if (!v.length) return undefined;
    let sum = 0;
    for (const x of v) sum += x;
    return sum / v.length;
  },
  max(w) {
    return w.values.length ? Math.max(...w.values) : undefined;
  },
  last(w) {
    return w.values.length ? w.values[w.values.length - 1] : undefined;
  },
  /// The `p`-th percentile (0–100) by linear interpolation between closest ranks; `undefined`
  /// for an empty window or a `p` outside [0, 100] (as the Rust SDK).
  percentile(w, p) {
    if (!w.values.length || !(p >= 0 && p <= 100)) return undefined;
    const v = Array.from(w.values).sort((a, b) => a - b);
    const rank = (p / 100) * (v.length - 1);
    const lo = Math.floor(rank);
    const hi = Math.ceil(rank);
    return v[lo] + (v[hi] - v[lo]) * (rank - lo);
  },
  /// Per-second rate of a counter over the window: increase / elapsed time, counting a drop as
  /// a reset (the counter restarted from zero), as Prometheus' `rate` does. `undefined` with
  /// fewer than two points or no elapsed time.
  rate(w) {
    const n = w.values.length;
    if (n < 2) return undefined;
    const seconds = (Number(w.timestampsMs[n - 1]) - Number(w.timestampsMs[0])) / 1000;
    if (!(seconds > 0)) return undefined;
    let increase = 0;
    for (let i = 1; i < n; i++) {
      const [a, b] = [w.values[i - 1], w.values[i]];
      increase += b >= a ? b - a : b;
    }
    return increase / seconds;
  },
  /// `[timestampMs, value]` pairs, oldest first (the time as a Number).
  points(w) {
    return Array.from(w.values, (v, i) => [Number(w.timestampsMs[i]), v]);
  },
};

/// The mean of metric `name` (default: the first window's metric) over the windows: each
/// series' mean, averaged across series. `undefined` when none has data.
export function meanOf(windows, name) {
  const metric = name ?? windows[0]?.metric;
  const means = windows.filter((w) => w.metric === metric).map(window.mean).filter((m) => m !== undefined);
  if (!means.length) return undefined;
  return { metric, value: means.reduce((a, b) => a + b, 0) / means.length };
}

/// A config key's description, for `metadata()`.
export const key = (name, description, required = false) => ({ name, description, required });

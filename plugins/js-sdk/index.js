// The plugin SDK for JavaScript: what every plugin otherwise writes again, as the Rust SDK
// (`elastic_sdk`) gives it — the plugin's configuration, typed persistent state, logging through
// the agent, window statistics, and the contract's errors. ES modules without dependencies:
// componentize-js bundles them into the component with the plugin.
//
//   import { exportPolicy, badConfig, window } from './sdk/index.js';
//   export const policy = exportPolicy({ metadata() { … }, evaluate(ctx) { … } });

import * as host from 'elastic:plugin/host@0.1.4';
import { parseJson } from './core.js';

export * from './core.js';

/// The plugin's `[plugins.NAME.config]` table, as an object.
export function config() {
  return parseJson(host.config(), '[plugins.<name>.config]');
}

/// A secret granted to this plugin (`[plugins.NAME] secrets`), or `undefined`. Never log it.
export function secret(name) {
  return host.secret(name);
}

/// Typed persistent state: any JSON value under a key; survives hot swaps and restarts.
export const state = {
  get(key) {
    const bytes = host.stateGet(key);
    if (bytes === undefined) return undefined;
    try {
      return JSON.parse(new TextDecoder().decode(bytes));
    } catch {
      return undefined; // a value of another shape (an upgrade changed it): start afresh
    }
  },
  set(key, value) {
    host.stateSet(key, new TextEncoder().encode(JSON.stringify(value)));
  },
  delete(key) {
    host.stateDelete(key);
  },
};

/// Lines in the agent's log, tagged with the plugin's name.
export const log = {
  trace: (m) => host.log('trace', String(m)),
  debug: (m) => host.log('debug', String(m)),
  info: (m) => host.log('info', String(m)),
  warn: (m) => host.log('warn', String(m)),
  error: (m) => host.log('error', String(m)),
};

/// The agent's clock, milliseconds since the epoch.
export const nowMs = () => Number(host.nowMs());


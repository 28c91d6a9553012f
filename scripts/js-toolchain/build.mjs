// Builds a JavaScript plugin into a WebAssembly component with componentize-js (the version
// pinned in package.json / package-lock.json next to this file):
//
//   node build.mjs --wit WIT_DIR --world policy-plugin [--types DIR] app.js out.wasm
//
// Run it from a folder that holds the plugin's sources and what they import: componentize-js
// reads modules under the working directory only.
//
// `--types DIR` also writes TypeScript declarations of the world (for editors: the contract's
// records, variants and functions with their documentation) from the same WIT.
//
// Every WASI capability is left out (`disableFeatures`): the agent's contract is all a plugin
// gets, so the component imports nothing else. No ahead-of-time compilation (weval, which
// componentize-js 0.20 and later would fetch from outside the npm registry): the agent compiles
// the component itself, once.
//
// Why componentize-js 0.19.3 with jco 1.15.4 and oxc-parser 0.72.3 (package.json `overrides`):
// they were released together (jco 1.15.4 depends on componentize-js ^0.19.3), they install and
// run on Node.js 18 (Debian 12's) and 20 alike — later jco and oxc-parser releases carry native
// add-ons for node 20 only — and `jco componentize` works there too (jco 1.35's fails with "failed
// to get path metadata … os error 44": its WASI shim sees no folder at all).
import { componentize } from '@bytecodealliance/componentize-js';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const args = process.argv.slice(2);
const option = (name) => {
  const at = args.indexOf(name);
  if (at < 0 || at + 1 >= args.length) throw new Error(`${name} is required`);
  return args.splice(at, 2)[1];
};
const witPath = option('--wit');
const worldName = option('--world');
const typesDir = args.includes('--types') ? option('--types') : undefined;
const [sourcePath, out] = args;
if (!sourcePath || !out) {
  console.error('usage: node build.mjs --wit WIT_DIR --world WORLD SOURCE.js OUT.wasm');
  process.exit(2);
}
if (typesDir) await writeTypes(witPath, worldName, typesDir);
const started = Date.now();
const { component } = await componentize({
  sourcePath,
  witPath,
  worldName,
  disableFeatures: ['random', 'stdio', 'clocks', 'http', 'fetch-event'],
});
// Written beside, then renamed: a running agent watching the folder never sees half a file.
await writeFile(`${out}.tmp`, component);
await rename(`${out}.tmp`, out);
console.log(`built ${out} (${(component.length / 1e6).toFixed(1)} MB) in ${((Date.now() - started) / 1000).toFixed(1)} s`);

/// jco's type generator, called on the WIT's text: its command line (`jco types`) cannot read
/// a path here ("failed to read path for WIT … os error 44").
async function writeTypes(wit, world, dir) {
  const here = dirname(fileURLToPath(import.meta.url));
  const candidates = [
    join(here, 'node_modules/@bytecodealliance/jco/obj/js-component-bindgen-component.js'),
    join(here, 'node_modules/@bytecodealliance/jco-transpile/vendor/js-component-bindgen-component.js'),
  ];
  const found = candidates.find(existsSync);
  if (!found) throw new Error(`jco-transpile is not installed next to ${here}: run npm ci`);
  const bindgen = await import(pathToFileURL(found));
  await bindgen.$init;
  const files = (await readdir(wit)).filter((f) => f.endsWith('.wit')).sort();
  const source = (await Promise.all(files.map((f) => readFile(join(wit, f), 'utf8')))).join('\n');
  const generated = bindgen.generateTypes('plugin', {
    wit: { tag: 'source', val: source },
    world,
    guest: true,
    features: { tag: 'list', val: [] },
    tlaCompat: false,
  });
  for (const [name, bytes] of generated) {
    const path = join(dir, name);
    await mkdir(dirname(path), { recursive: true });
    await writeFile(path, bytes);
  }
  console.log(`types of ${world} in ${dir}/`);
}

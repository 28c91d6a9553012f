#!/usr/bin/env bash
# Builds {{name}}.wasm (a WebAssembly component) next to this script, with componentize-py
# (installed, pinned, into .venv on first use), against the agent's contract in wit/.
set -euo pipefail
cd "$(dirname "$0")"
# $COMPONENTIZE_PY: use an installed componentize-py instead.
cpy=${COMPONENTIZE_PY:-.venv/bin/componentize-py}
if [ ! -x "$cpy" ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check componentize-py=={{componentize_py}}
fi
"$cpy" -q -d wit -w {{world}} componentize app -o {{name}}.wasm
echo "built $(pwd)/{{name}}.wasm"

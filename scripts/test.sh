#!/usr/bin/env bash
# Run the test suite from a clean clone: creates .venv, installs the project (CPU torch where there is
# no GPU), runs pytest. Extra arguments go to pytest, e.g. `scripts/test.sh -k kernel -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
if ! python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    python -m pip install -q torch
  else
    python -m pip install -q torch==2.13.0  # the CPU build on this kind of machine's disk
  fi
fi
python -m pip install -q -e ".[dev]"
exec python -m pytest -q "$@"

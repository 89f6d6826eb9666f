# Sourced by scripts/test.sh and scripts/demo.sh: creates .venv on first use and installs the project into it
# (the CPU build of torch where there is no GPU). Safe to source again: installs only what is missing.
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
if ! python -c "import torch" 2>/dev/null; then
  python -m pip install -q --upgrade pip
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    python -m pip install -q torch
  else
    python -m pip install -q torch==2.13.0  # the CPU build (on this kind of machine's disk)
  fi
fi
if ! python -m pip show -q sr3d >/dev/null 2>&1 || ! python -c "import monai, nibabel, lightning, hydra, pytest, hypothesis" 2>/dev/null; then
  python -m pip install -q -e ".[dev]"
fi

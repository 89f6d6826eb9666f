#!/usr/bin/env bash
# Run the test suite from a clean clone: creates .venv, installs the project (CPU torch where there is no GPU)
# and runs pytest (GPU tests are skipped without a GPU). Extra arguments go to pytest: scripts/test.sh -k kernel
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
exec python -m pytest -q "$@"

#!/usr/bin/env bash
# The project's one test command: sets up .venv from a fresh clone (scripts/setup-env.sh), then runs
# the whole suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh
exec .venv/bin/python -m pytest "$@"

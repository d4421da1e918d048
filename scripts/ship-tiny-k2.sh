#!/usr/bin/env bash
# Remake the prebuilt tiny-k2 the tests and the demo use (tests/data/tiny-k2): train it from the current
# training inputs (about 42 minutes on 2 cores, or seconds when this machine's cache already has it), then
# copy it there with a manifest of its file hashes and of those inputs. Needed after a change to the
# training code, its data (tiny/, toolsuite.py) or the locked torch / transformers / tokenizers /
# safetensors: tests/test_tiny.py says when. Commit tests/data/tiny-k2 afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh
.venv/bin/kimi-deploy tiny-model runs/tiny-k2-ship --force
.venv/bin/python -c 'import pathlib, sys; from kimi_deploy.tiny.model import ship; print(ship(pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])))' \
  runs/tiny-k2-ship tests/data/tiny-k2
rm -rf runs/tiny-k2-ship
echo "[ship] tests/data/tiny-k2 is the checkpoint of today's training inputs: commit it"

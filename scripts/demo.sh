#!/usr/bin/env bash
# The README demo: from a fresh clone, set up the environment, make tiny-k2, serve it with the real vLLM
# CPU engine through `kimi-deploy serve`, wait until it answers, then send a chat and a tool call with
# the openai client. The server is stopped on exit, also on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh
KD=.venv/bin/kimi-deploy
SPEC=deploy/tiny-k2-cpu.yaml
URL=http://127.0.0.1:8011
mkdir -p runs/demo

"$KD" tiny-model runs/tiny-k2 --prebuilt tests/data/tiny-k2  # the checkpoint the tests use (training it: ~40 min)
"$KD" validate "$SPEC"

echo "[demo] starting vLLM (log: runs/demo/server.log)"
# The server runs at a lower CPU priority (nice 10) because the demo's benchmark client shares the same
# cores: the client needs little CPU, but when it needs it, it must run at once, or its timestamps come
# late and its self-check rightly marks the run INVALID. The server still gets every cycle the client
# does not use.
setsid nice -n 10 "$KD" serve "$SPEC" > runs/demo/server.log 2>&1 &
server=$!
stop() {
  trap - EXIT INT TERM
  kill -TERM -- "-$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  echo "[demo] server stopped"
}
trap stop EXIT
trap 'exit 130' INT TERM

if ! "$KD" wait "$URL" --timeout 600; then
  tail -n 40 runs/demo/server.log >&2
  exit 1
fi
.venv/bin/python -m kimi_deploy.demo "$URL" tiny-k2

echo "[demo] kimi-deploy bench (tool-call workload, 4 users, 24 requests, one client process)"
"$KD" bench --base-url "$URL/v1" --model tiny-k2 --output runs/demo/bench --workload tool-calls \
  --concurrency 4 --num-requests 24 --warmup 4 --thinking off --workers 1 --overwrite

# The comparison a real deployment runs against Moonshot's API (MOONSHOT_API_KEY), here against the same
# endpoint as its own reference, since the demo has no key and tiny-k2 is not Kimi K2: a self-consistency
# run at temperature 0 that shows the verdict, summary.json and the report.
echo "[demo] kimi-deploy compare (the 316-row tool-call suite, streamed and not, the deployment against itself)"
"$KD" compare --local "$URL" --reference "$URL/v1" --suite tool-calls --output runs/demo/compare --overwrite
echo "[demo] reports: runs/demo/bench/report.html, runs/demo/compare/report.html"

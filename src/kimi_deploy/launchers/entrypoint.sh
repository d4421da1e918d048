#!/usr/bin/env bash
# Container entrypoint for Kubernetes (Deployment or LeaderWorkerSet pods): one `kimi-deploy serve` per
# pod. The pod's role comes from LWS_LEADER_ADDRESS / LWS_WORKER_INDEX / LWS_GROUP_SIZE, which serve
# reads itself; for prefill/decode groups set KIMI_PD_GROUP (prefill | decode | router).
#
#   KIMI_SPEC        the deployment spec inside the container (default /etc/kimi-deploy/spec.yaml)
#   KIMI_DEPLOY_BIN  the kimi-deploy executable (default: kimi-deploy on PATH)
# Extra arguments go to `kimi-deploy serve` (e.g. --dry-run). Secrets (the API key, HF_TOKEN) arrive as
# environment variables from Kubernetes Secrets and are never echoed.
set -euo pipefail

spec="${KIMI_SPEC:-/etc/kimi-deploy/spec.yaml}"
kimi_deploy="${KIMI_DEPLOY_BIN:-kimi-deploy}"

if [[ ! -f "$spec" ]]; then
  echo "entrypoint: spec not found: $spec (set KIMI_SPEC)" >&2
  exit 2
fi

# exec: the engine becomes PID 1's direct child chain, so SIGTERM from the kubelet reaches it.
exec "$kimi_deploy" serve "$spec" "$@"

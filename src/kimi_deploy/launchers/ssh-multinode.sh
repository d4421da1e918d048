#!/usr/bin/env bash
# Start a multi-node deployment over SSH: node rank i runs on the i-th host. Every node gets the whole
# host list (serve --hosts), so each group's head is the first host of its own ranks: for a
# prefill/decode spec the prefill side's, the decode side's, and the router last (see `kimi-deploy
# render SPEC` for which rank is which).
#
#   launchers/ssh-multinode.sh SPEC HOST0 HOST1 [...] [-- serve options]
#
#   SSH               the ssh command (default: ssh -o BatchMode=yes)
#   KIMI_DEPLOY_BIN   kimi-deploy on the remote hosts (default: kimi-deploy)
#   KIMI_REMOTE_SPEC  the spec's path on the remote hosts (default: the same path as SPEC)
#   KIMI_FORWARD_ENV  names of environment variables to hand to the remote side (default:
#                     "KIMI_API_KEY HF_TOKEN"); their values travel on ssh's stdin, never on a command line,
#                     one NAME=value line each, so a value with a control character (a newline would
#                     start another NAME=value line on the remote side) is refused.
# Ctrl-C or a failing node stops every node.
set -euo pipefail

if [[ $# -lt 2 ]]; then
  echo "usage: $0 SPEC HOST0 [HOST1 ...] [-- serve options]" >&2
  exit 2
fi
spec="$1"
shift
hosts=()
while [[ $# -gt 0 && "$1" != "--" ]]; do
  hosts+=("$1")
  shift
done
[[ "${1:-}" == "--" ]] && shift
serve_opts=("$@")

read -r -a ssh_cmd <<< "${SSH:-ssh -o BatchMode=yes}"
kimi_deploy="${KIMI_DEPLOY_BIN:-kimi-deploy}"
remote_spec="${KIMI_REMOTE_SPEC:-$spec}"
read -r -a forward <<< "${KIMI_FORWARD_ENV:-KIMI_API_KEY HF_TOKEN}"

bad_input() {
  echo "$0: $1" >&2
  exit 2
}
if [[ ${#hosts[@]} -eq 0 ]]; then
  bad_input "no hosts given (usage: $0 SPEC HOST0 [HOST1 ...] [-- serve options])"
fi
# Each host is an ssh destination, [USER@]ADDRESS; ADDRESS is what the other nodes reach it by (serve
# --hosts). It is checked here as serve checks it (kimi_deploy.launch.check_host): a host name or IP
# address, never starting with '-' (an option to ssh, -oProxyCommand=..., and to the engine), no ',' (it
# would split the list), no whitespace, quotes or '/'.
address_re='^[][A-Za-z0-9._:][][A-Za-z0-9._:-]*$'  # ']' first in a bracket expression is literal (POSIX ERE)
user_re='^[A-Za-z0-9._][A-Za-z0-9._-]*@$'
addresses=()
for host in "${hosts[@]}"; do
  address="${host##*@}"
  user="${host%"$address"}"
  if [[ ! "$address" =~ $address_re || "$host" == -* || ( -n "$user" && ! "$user" =~ $user_re ) ]]; then
    bad_input "host list: '$host' is not a host name or IP address, optionally after USER@ (letters, digits, '.', ':', '-', '[]'; not starting with '-')"
  fi
  addresses+=("$address")
done
host_list="$(IFS=,; echo "${addresses[*]}")"
# The launcher sets each node's rank and the host list: the same options among the serve options would
# override them (the last one wins), putting every node at one rank.
for opt in "${serve_opts[@]}"; do
  case "$opt" in
    --node-rank|--node-rank=*|--hosts|--hosts=*|--head-address|--head-address=*)
      bad_input "serve option ${opt%%=*}: the launcher sets it for each node from the host list; leave it out" ;;
  esac
done
for name in "${forward[@]}"; do
  if [[ ! "$name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
    bad_input "KIMI_FORWARD_ENV: '$name' is not an environment variable name"
  fi
  # Checked here, before any node starts; the value itself is never printed.
  if [[ "${!name:-}" == *[[:cntrl:]]* ]]; then
    bad_input "$name: the value contains a control character (newline, CR, tab, ...), which would end its NAME=value line on the remote side; set it without one"
  fi
done

secrets() {
  local name
  for name in "${forward[@]}"; do
    if [[ -n "${!name:-}" ]]; then
      printf '%s=%s\n' "$name" "${!name}"
    fi
  done
}

# Each output line with the node's prefix (printf, not sed: the prefix is data, never a pattern).
prefix() {
  local line
  while IFS= read -r line || [[ -n "$line" ]]; do
    printf '%s%s\n' "$1" "$line"
  done
}

pids=()
stop_all() {
  trap - INT TERM EXIT
  if [[ ${#pids[@]} -gt 0 ]]; then
    kill "${pids[@]}" 2>/dev/null || true
  fi
}
trap stop_all INT TERM EXIT

rank=0
for host in "${hosts[@]}"; do
  # The remote shell reads NAME=value lines from stdin into its environment, then execs serve.
  remote="while IFS= read -r kv; do export \"\$kv\"; done; exec $(printf '%q ' "$kimi_deploy" serve "$remote_spec" \
    --node-rank "$rank" --hosts "$host_list" "${serve_opts[@]}")"
  secrets | "${ssh_cmd[@]}" "$host" "$remote" 2>&1 | prefix "[$host rank $rank] " &
  pids+=("$!")
  rank=$((rank + 1))
done

# A node that fails ends the deployment: a multi-node engine cannot run with a rank missing.
status=0
while [[ ${#pids[@]} -gt 0 ]]; do
  finished=""
  rc=0
  wait -n -p finished "${pids[@]}" || rc=$?
  left=()
  if [[ -n "${finished:-}" ]]; then
    status=$rc
    for pid in "${pids[@]}"; do
      [[ "$pid" != "$finished" ]] && left+=("$pid")
    done
  else
    # wait -n named no job (bash unsets the -p variable when the ones it could report were reaped
    # together): each node that has ended gives its status by its pid, the others are waited on again
    for pid in "${pids[@]}"; do
      if kill -0 "$pid" 2>/dev/null; then
        left+=("$pid")
      else
        rc=0
        wait "$pid" || rc=$?
        [[ $rc -ne 0 ]] && status=$rc
      fi
    done
    [[ ${#left[@]} -gt 0 && $status -eq 0 ]] && sleep 1
  fi
  pids=("${left[@]}")
  [[ $status -ne 0 ]] && break
done
stop_all
exit "$status"

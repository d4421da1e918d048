"""`render`, `serve`, `wait` and `k8s`: the engine command of every node, starting this node's part,
waiting for an endpoint, and Kubernetes manifests."""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from ..deployment import HEAD_VARS, Deployment, resolve
from ..engines import sglang
from ..engines.render import RenderedNode, render
from ..engines.base import REF
from ..errors import BadInput, OperationFailed
from ..launch import check_host
from ..spec import ENV_NAME, load_spec
from ._common import ApiKeyEnv, HeadAddress, NodeRank, SpecArg, err, finite, out


# The tool's own variables, the only ${NAME} references a printed command may expand: each group's head
# address (deployment.HEAD_VARS) and the startup files' paths (engines/sglang.py); the spec's
# serving.api_key_env is added per deployment. Everything else, spec data above all, is single-quoted
# and so inert when the script runs.
TOOL_VARS = frozenset([*HEAD_VARS.values(), sglang.CONFIG_VAR, sglang.LOGGING_VAR])


def shell_word(tok: str, refs: frozenset[str] | set[str] = TOOL_VARS) -> str:
    """Quote one word for bash: a reference to one of `refs` becomes "${NAME}" (expanded on the node),
    every other part is single-quoted, so `m${HOME}$(touch x)` stays those very characters."""
    parts, pos = [], 0
    for m in REF.finditer(tok):
        if m.group(1) not in refs:
            continue
        if m.start() > pos:
            parts.append(shlex.quote(tok[pos:m.start()]))
        parts.append(f'"${{{m.group(1)}}}"')
        pos = m.end()
    if pos < len(tok) or not parts:
        parts.append(shlex.quote(tok[pos:]))
    return "".join(parts)


def node_refs(dep: Deployment, node: RenderedNode) -> frozenset[str]:
    """The references this node's printed command may expand."""
    return TOOL_VARS | {f.var for f in node.startup_files} | ({dep.api_key_env} if dep.api_key_env else set())


# Fills ${NAME} references in a JSON template (argv[1]) from the environment and prints it as UTF-8 JSON;
# argv[2] == "1" refuses top-level values that start with "-". The secret is read inside python3, so it
# is never on a command line; an unset or empty variable fails (an empty key would mean no auth).
_FILL_TEMPLATE = (
    "import json, os, re, sys\n"
    "def env(m):\n"
    "    v = os.environ.get(m.group(1))\n"
    "    if not v: sys.exit(m.group(1) + ' is not set or empty')\n"
    "    return v\n"
    "def fill(v):\n"
    "    if isinstance(v, dict): return {k: fill(x) for k, x in v.items()}\n"
    "    if isinstance(v, list): return [fill(x) for x in v]\n"
    "    if isinstance(v, str): return re.sub(r'\\$\\{(\\w+)\\}', env, v)\n"
    "    return v\n"
    "d = fill(json.loads(sys.argv[1]))\n"
    "if sys.argv[2] == '1' and any(isinstance(x, str) and x.startswith('-') for x in d.values()):\n"
    "    sys.exit('a value starts with -, which the engine would read as an option')\n"
    "sys.stdout.buffer.write(json.dumps(d, ensure_ascii=False).encode())"
)


def _startup_file_lines(node: RenderedNode) -> list[str]:
    """Shell that does what `serve` does for the startup files: a private 0700 directory on tmpfs, each
    file 0600 inside it, filled from the environment, its path in ${var}; any failure stops the script."""
    if not node.startup_files:
        return []
    lines = ['KIMI_STARTUP_DIR="$(umask 077 && mktemp -d "${XDG_RUNTIME_DIR:-/dev/shm}/kimi-deploy-XXXXXX")" || exit 1']
    for i, f in enumerate(node.startup_files):
        lines += [f'{f.var}="$KIMI_STARTUP_DIR/{i}{f.suffix}"', f"export {f.var}",
                  f"(umask 077 && python3 -c {shlex.quote(_FILL_TEMPLATE)} {shlex.quote(json.dumps(f.content))} "
                  f"{int(f.no_leading_dash)} > \"${f.var}\") || exit 1"]
    return lines


def _shell(dep: Deployment, node: RenderedNode) -> str:
    refs = node_refs(dep, node)
    lines = [f"# node {node.rank}: {node.role}"
             + (" (serves HTTP)" if node.serves_http and not node.health_only else
                " (health endpoint only)" if node.health_only else " (no HTTP)")]
    lines += _startup_file_lines(node)
    for k, v in node.env.items():
        if not ENV_NAME.fullmatch(k):  # spec.py refuses these; never print one
            raise BadInput(f"{k!r} is not a valid environment variable name", "serving.env")
        lines.append(f"export {k}={shell_word(v, refs)}")
    lines += [" ".join(shell_word(t, refs) for t in cmd) for cmd in node.setup]
    words = [shell_word(t, refs) for t in node.argv]
    out_lines, cur = [], words[0]
    for w in words[1:]:
        if w.startswith("--"):
            out_lines.append(cur)
            cur = "  " + w
        else:
            cur += " " + w
    out_lines.append(cur)
    lines.append(" \\\n".join(out_lines))
    return "\n".join(lines)


def render_cmd(
    spec: SpecArg,
    node_rank: Annotated[Optional[int], typer.Option("--node-rank", min=0, help="Only this node's command.")] = None,
    head_address: Annotated[Optional[str], typer.Option(
        "--head-address", help="Head node address (default: a ${KIMI_HEAD_ADDR} reference).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help='Print {"nodes": [{rank, role, argv, env}]}.')] = False,
    check: Annotated[bool, typer.Option("--check", help="Also check every command with the installed engine's parser.")] = False,
) -> None:
    """The engine command for every node (copy-paste-ready shell, or JSON)."""
    dep = resolve(load_spec(spec))
    if head_address is not None:
        check_host(head_address, "--head-address")
    if head_address and dep.pd:
        raise BadInput("a prefill/decode spec has one head per side; its heads stay ${KIMI_PREFILL_HEAD_ADDR} / "
                       "${KIMI_DECODE_HEAD_ADDR} references", "--head-address")
    nodes = render(dep, {"serve": head_address} if head_address else None)
    if node_rank is not None:
        if not node_rank < len(nodes):
            raise BadInput(f"node rank {node_rank} is outside 0..{len(nodes) - 1} for this spec", "--node-rank")
        nodes = [n for n in nodes if n.rank == node_rank]
    if check:
        from ..engines.check import check_nodes
        from ..progress import Progress

        bad = []
        # a node at a time, so the count moves while the engines load their parsers and run them
        with Progress(err, label="render --check", total=len(nodes)) as progress:
            for node in nodes:
                rejected = check_nodes([node])
                bad += rejected
                progress.advance(failed=int(bool(rejected)))
        if bad:
            rank, role, msg = bad[0]
            raise BadInput(f"node {rank} ({role}): the engine's parser rejects the command: {msg}", "serving.extra_args")
    if as_json:
        sys.stdout.write(json.dumps({"nodes": [n.to_json() for n in nodes]}, indent=2) + "\n")
    else:
        sys.stdout.write("\n\n".join(_shell(dep, n) for n in nodes) + "\n")


def serve(
    spec: SpecArg,
    node_rank: NodeRank = None,
    head_address: HeadAddress = None,
    hosts: Annotated[Optional[str], typer.Option(
        "--hosts", help="Every rank's host, comma-separated in rank order (with --node-rank): each group's "
        "head is the first host of its ranks, so a prefill/decode side finds its own head.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Resolve role and run preflight; start nothing.")] = False,
    skip_preflight: Annotated[bool, typer.Option("--skip-preflight", help="Start even if preflight fails.")] = False,
    skip_verify: Annotated[bool, typer.Option("--skip-verify", help="Start without a valid verify marker "
                                              "(weights not proven complete; see `kimi-deploy verify`).")] = False,
    check_args: Annotated[bool, typer.Option("--check-args/--no-check-args",
                                             help="Check the command with the engine's own parser.")] = True,
) -> None:
    """This node: resolve its role, preflight, then exec the engine."""
    from ..launch import check_api_key, exec_node, materialize, node_command, preflight, redact, resolve_node

    dep = resolve(load_spec(spec))
    env = dict(os.environ)
    ctx = resolve_node(dep, node_rank, head_address, env, hosts=hosts.split(",") if hosts is not None else None)
    node = node_command(dep, ctx)
    materialize(node, env)  # fails early (exit 2) when a referenced env var such as the API key is missing
    check_api_key(dep, env)
    head = ctx.heads.get(node.group, "-") if node.group != "router" else ", ".join(ctx.heads.values())
    out.print(f"node {ctx.rank} of {dep.name}: role [bold]{node.role}[/bold] (from {ctx.source}), head {head}")
    pf = preflight(dep, node, check_args=check_args, skip_verify=skip_verify)
    for c in pf.checks:
        mark = "[green]ok[/green]" if c.ok else ("[red]FAIL[/red]" if c.fatal else "[yellow]warn[/yellow]")
        out.print(f"  {mark} {c.name}: {escape(redact(c.detail, env, dep))}")
    shown = " ".join(shell_word(t) for t in node.argv)  # references, never the secret values
    out.print(f"  command: {escape(redact(shown, env, dep))}", soft_wrap=True)
    if pf.failed and not skip_preflight:
        if any(c.name == "engine installed" for c in pf.failed):
            raise BadInput(f"{dep.engine} is not installed in this environment (install it, or run inside "
                           "the engine's image)", "engine.name")
        arg_fail = [c for c in pf.failed if c.name == "arguments"]
        if arg_fail:
            raise BadInput(f"the engine's parser rejects the command: {arg_fail[0].detail}", "serving.extra_args")
        raise OperationFailed("preflight failed: " + "; ".join(f"{c.name}: {c.detail}" for c in pf.failed))
    if dry_run:
        out.print("dry run: not starting the engine")
        return
    exec_node(node, env)


def wait_cmd(
    url: Annotated[str, typer.Argument(help="Base URL, e.g. http://head:8000 (or .../v1)")],
    timeout: Annotated[float, typer.Option("--timeout", min=0.001, callback=finite, help="Seconds before giving up (exit 1).")] = 1800,
    model: Annotated[Optional[str], typer.Option("--model", help="Expect this served model name.")] = None,
    api_key_env: ApiKeyEnv = None,
) -> None:
    """Wait until the endpoint really answers: /health, then /v1/models, then one tiny completion."""
    from rich.status import Status

    from ..endpoint import Endpoint, wait_ready

    ep = Endpoint.from_url(url, flag="URL", api_key_env=api_key_env)
    with Status("waiting", console=err) as status:
        result = wait_ready(ep, timeout=timeout, model=model,
                            on_phase=lambda phase, t: status.update(f"waiting for {ep.root}: {phase} ({t:.0f} s)"))
    out.print(f"[green]ready[/green] {ep.root}: model {result.model} answered after {result.seconds:.1f} s")


def k8s_cmd(
    spec: SpecArg,
    out_dir: Annotated[Path, typer.Option("-o", "--output", help="Directory for one file per object + kustomization.yaml.")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the manifests of another deployment "
                                            "(another spec `name`) rendered into the directory.")] = False,
) -> None:
    """Kubernetes manifests (Deployment or LeaderWorkerSet, weights PVC + download Job, probes, Service,
    PDB, PodMonitor, bench Job) rendered from the spec."""
    from ..k8s import write

    paths = write(spec, out_dir, overwrite=overwrite)
    out.print(f"wrote {len(paths)} files to {out_dir}: " + ", ".join(p.relative_to(out_dir).as_posix() for p in paths))


def register(app: typer.Typer) -> None:
    app.command("render")(render_cmd)
    app.command()(serve)
    app.command("wait")(wait_cmd)
    app.command("k8s")(k8s_cmd)

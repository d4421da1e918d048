"""Start this node's part of a deployment: find its role (explicit flags, LeaderWorkerSet env, Slurm
env), run preflight checks, then exec the engine so signals reach it directly. (Waiting for an endpoint
to answer is kimi_deploy.endpoint.wait_ready.)"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .deployment import Deployment
from .engines.render import RenderedNode, render
from .engines.base import REF
from .errors import BadInput, OperationFailed
from .weights import check_marker, read_index

# A head address is a host name or an IPv4/IPv6 address, nothing else: it lands in argv and is never
# expanded or quoted again. Neither starts with '-' (RFC 952 / RFC 1123 labels begin with a letter or
# digit), and a word that does would be read as an option by the engine, ray or ssh.
_HOST = re.compile(r"[A-Za-z0-9._:\[\]][A-Za-z0-9._:\[\]-]*")


def check_host(value: str, field: str) -> str:
    if value.startswith("-"):
        raise BadInput(f"{value!r} starts with '-': a host name or IP address never does, and the engine "
                       "would read it as an option", field)
    if not _HOST.fullmatch(value):
        raise BadInput(f"{value!r} is not a host name or IP address", field)
    return value


@dataclass(frozen=True)
class NodeContext:
    rank: int
    heads: Mapping[str, str]  # group name -> head address (groups not known here stay references)
    source: str  # flags | lws | slurm | single | env


# More hosts than any Slurm allocation this tool launches on: a list that expands beyond it is a typo
# (gpu[0-99999999]), refused before it fills memory.
MAX_SLURM_HOSTS = 65536
_HOST_CHARS = re.compile(r"^[A-Za-z0-9._-]*$")


def expand_slurm_nodelist(nodelist: str, field: str = "SLURM_JOB_NODELIST") -> list[str]:
    """Slurm's compact host list, expanded as `scontrol show hostnames` does: 'gpu[01-02,07],login1' ->
    gpu01 gpu02 gpu07 login1, and several brackets in one name multiply out in order
    ('rack[1-2]-gpu[01-02]' -> rack1-gpu01 rack1-gpu02 rack2-gpu01 rack2-gpu02; slurm/src/common/hostlist.c).
    Anything else is bad input naming `field`: a wrong list would make the wrong node the head."""
    def bad(why: str) -> BadInput:
        return BadInput(f"{nodelist!r} is not a Slurm host list ({why})", field)

    if not nodelist.strip():
        raise bad("it is empty")
    items, depth, cur = [], 0, ""
    for c in nodelist.strip():
        if c == "[":
            depth += 1
            if depth > 1:
                raise bad("nested brackets")
        elif c == "]":
            depth -= 1
            if depth < 0:
                raise bad("']' without '['")
        if c == "," and depth == 0:
            items.append(cur)
            cur = ""
        else:
            cur += c
    if depth:
        raise bad("'[' without ']'")
    items.append(cur)
    hosts: list[str] = []
    for item in items:
        if not item:
            raise bad("an empty name between commas")
        # Alternate literal text and bracket contents: text, ranges, text, ranges, ..., text.
        pieces = re.split(r"\[([^\]]*)\]", item)
        names = [""]
        for i, piece in enumerate(pieces):
            if i % 2 == 0:
                if not _HOST_CHARS.match(piece):
                    raise bad(f"{piece!r} has characters a host name cannot have")
                names = [n + piece for n in names]
                continue
            values: list[str] = []
            for part in piece.split(","):
                lo, sep, hi = part.partition("-")
                if not lo.isascii() or not lo.isdigit() or (sep and not (hi.isascii() and hi.isdigit())):
                    raise bad(f"[{piece}]: {part!r} is not a number or a range of numbers")
                if len(lo) > 18 or len(hi) > 18:
                    raise bad(f"[{piece}]: {part!r} has too many digits")
                if not sep:
                    values.append(lo)
                    continue
                if int(hi) < int(lo):
                    raise bad(f"[{piece}]: the range {part} runs backwards")
                if int(hi) - int(lo) + 1 > MAX_SLURM_HOSTS:
                    raise bad(f"[{piece}] expands to more than {MAX_SLURM_HOSTS} hosts")
                values += [f"{n:0{len(lo)}d}" for n in range(int(lo), int(hi) + 1)]
            if len(names) * len(values) > MAX_SLURM_HOSTS:
                raise bad(f"it expands to more than {MAX_SLURM_HOSTS} hosts")
            names = [n + v for n in names for v in values]
        if len(hosts) + len(names) > MAX_SLURM_HOSTS:
            raise bad(f"it expands to more than {MAX_SLURM_HOSTS} hosts")
        if any(not n for n in names):
            raise bad("an empty host name")
        dash = next((n for n in names if n.startswith("-")), None)
        if dash is not None:  # RFC 1123 labels begin with a letter or digit; the engine would see an option
            raise bad(f"{dash!r} starts with '-', which no host name does")
        hosts += names
    return hosts


def _local_address() -> str:
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def resolve_node(dep: Deployment, node_rank: int | None, head_address: str | None,
                 env: Mapping[str, str], *, hosts: Sequence[str] | None = None) -> NodeContext:
    """Which rank this node is and where the heads are. `hosts` (serve --hosts) is every rank's host in
    rank order, as the SSH launcher knows them: each group's head is the first host of its own ranks,
    which is what a prefill/decode spec needs (one head per side) and --head-address cannot say."""
    total = dep.total_ranks
    offsets = {g.name: g.first_rank for g in dep.groups if dep.pd}
    if dep.router:
        offsets["router"] = dep.router.rank
    pd_group = env.get("KIMI_PD_GROUP")  # under LWS each P/D side is its own group
    if pd_group is not None and pd_group not in offsets:
        raise BadInput(f"KIMI_PD_GROUP must be one of {', '.join(offsets) or '(none: spec has no pd)'}",
                       "KIMI_PD_GROUP")
    # Heads known from the environment (the P/D router pod gets both sides' Service names).
    heads = {g.name: check_host(env[g.head_var], g.head_var) for g in dep.groups if env.get(g.head_var)}
    if node_rank is None and pd_group == "router":  # the P/D router pod: no LWS group, no GPUs
        return NodeContext(offsets["router"], heads, "env")
    own = pd_group if pd_group in ("prefill", "decode") else None
    if head_address is not None and dep.pd:
        # One address cannot name both sides' heads; a wrong one would make a side join the other's
        # rendezvous. The sides' heads come from their own variables (or LWS / Slurm).
        raise BadInput("a prefill/decode spec has one head per side: set KIMI_PREFILL_HEAD_ADDR and "
                       "KIMI_DECODE_HEAD_ADDR instead, give every rank's host with --hosts, or run under a "
                       "LeaderWorkerSet or Slurm", "--head-address")
    if head_address is not None:
        check_host(head_address, "--head-address")
    if hosts is not None:
        if node_rank is None:
            raise BadInput("--hosts names every rank's host; give this node's rank with --node-rank too", "--hosts")
        if head_address is not None:
            raise BadInput("--hosts already says where every head is (the first host of each group's ranks); "
                           "drop --head-address", "--head-address")
        if len(hosts) != total:
            router = ", the last one the router's" if dep.router else ""
            raise BadInput(f"--hosts names {len(hosts)} host(s) but the spec has {total} rank(s): give one host "
                           f"per rank in rank order{router}", "--hosts")
        for host in hosts:
            check_host(host, "--hosts")
        # Every group's head is the first host of its ranks, as under Slurm below.
        heads.update({g.name: hosts[g.first_rank] for g in dep.groups})
    if node_rank is not None:
        rank, source = node_rank, "flags"
        if not dep.pd and hosts is None:
            head = head_address
            if head is None and rank == 0:
                head = _local_address()
            if head is None and dep.groups[0].multi_node:
                raise BadInput(f"node rank {rank} is a worker and needs the head's address (--head-address)",
                               "--head-address")
            if head:
                heads["serve"] = head
    elif "LWS_LEADER_ADDRESS" in env or "LWS_WORKER_INDEX" in env:
        source = "lws"
        try:
            index = int(env.get("LWS_WORKER_INDEX", "0"))
            size = int(env.get("LWS_GROUP_SIZE", "1"))
        except ValueError:
            raise BadInput("LWS_WORKER_INDEX and LWS_GROUP_SIZE must be integers", "LWS_WORKER_INDEX") from None
        if dep.pd and own is None:
            raise BadInput("under a LeaderWorkerSet each side of a prefill/decode spec is its own group: set "
                           "KIMI_PD_GROUP to prefill or decode (the router runs as a Deployment)", "KIMI_PD_GROUP")
        group = dep.group(own) if own else dep.groups[0]
        if size != group.nodes:
            raise BadInput(f"LWS_GROUP_SIZE is {size} but the spec needs {group.nodes} node(s) per group",
                           "LWS_GROUP_SIZE")
        if not 0 <= index < size:
            raise BadInput(f"LWS_WORKER_INDEX is {index}, outside 0..{size - 1}", "LWS_WORKER_INDEX")
        rank = group.first_rank + index
        head = head_address or env.get("LWS_LEADER_ADDRESS")
        if not head:
            raise BadInput("LWS_WORKER_INDEX is set but LWS_LEADER_ADDRESS is not", "LWS_LEADER_ADDRESS")
        check_host(head, "--head-address" if head_address else "LWS_LEADER_ADDRESS")
        heads[group.name] = head
    elif "SLURM_NODEID" in env:
        source = "slurm"
        try:
            rank = int(env["SLURM_NODEID"])
            nnodes = int(env.get("SLURM_NNODES", "1"))
        except ValueError:
            raise BadInput("SLURM_NODEID and SLURM_NNODES must be integers", "SLURM_NODEID") from None
        if nnodes != total:
            raise BadInput(f"the Slurm job has {nnodes} node(s) but the spec needs {total}", "SLURM_NNODES")
        list_var = "SLURM_JOB_NODELIST" if "SLURM_JOB_NODELIST" in env else "SLURM_NODELIST"
        listed = expand_slurm_nodelist(env.get(list_var, ""), list_var)
        if len(listed) < nnodes:
            raise BadInput(f"{list_var} names {len(listed)} host(s), fewer than {nnodes}", list_var)
        # Every group's head is the first host of its ranks; --head-address overrides a single group's.
        heads.update({g.name: check_host(listed[g.first_rank], list_var) for g in dep.groups})
        if head_address and not dep.pd:
            heads["serve"] = head_address
    elif total == 1:
        rank, source = 0, "single"
        heads["serve"] = head_address or _local_address()
    else:
        how = ("--node-rank with KIMI_PREFILL_HEAD_ADDR and KIMI_DECODE_HEAD_ADDR set" if dep.pd
               else "--node-rank and --head-address")
        raise BadInput(f"the spec spans {total} nodes: give {how}, or run under a LeaderWorkerSet or a Slurm "
                       "allocation", "--node-rank")
    if not 0 <= rank < total:
        raise BadInput(f"node rank {rank} is outside 0..{total - 1} for this spec", "--node-rank")
    return NodeContext(rank, heads, source)


def node_command(dep: Deployment, ctx: NodeContext) -> RenderedNode:
    return next(n for n in render(dep, ctx.heads) if n.rank == ctx.rank)


# --- placeholders and secrets ---------------------------------------------------------------------

def expand_refs(text: str, env: Mapping[str, str]) -> str:
    """Replace ${VAR} references with values from the environment. A missing or empty one is bad
    input: an empty API key would start an engine with no authentication at all (vLLM ignores an empty
    VLLM_API_KEY: vllm/entrypoints/serve/middleware/register.py), an empty address cannot be reached."""
    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if not env.get(name):
            hint = " (give --head-address or set it, or run under LWS / Slurm)" if name.endswith("_ADDR") else \
                " (the spec names it in serving.api_key_env or serving.env)"
            raise BadInput(f"environment variable {name} is {'empty' if name in env else 'not set'}{hint}", name)
        return env[name]
    return REF.sub(sub, text)


def check_api_key(dep: Deployment, env: Mapping[str, str]) -> None:
    """The deployment's key obeys the rule its clients check before sending it (endpoint.key_problem:
    no control character, ASCII only, at least secrets.MIN_LEN characters); the value is never printed.
    A newline would also end a NAME=value line of launchers/ssh-multinode.sh."""
    from .endpoint import key_problem

    key = env.get(dep.api_key_env) if dep.api_key_env else None
    why = key_problem(key) if key is not None else None
    if why is not None:
        raise BadInput(f"the API key {why}", dep.api_key_env)


def redact(text: str, env: Mapping[str, str], dep: Deployment) -> str:
    """Belt and braces: no secret value ever reaches a line serve prints (secrets.scrub: the deployment's
    key variable and every credential variable of `env`, by the one rule and minimum length)."""
    from .secrets import scrub

    return scrub(text, [dep.api_key_env], env)


# --- preflight ------------------------------------------------------------------------------------

@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fatal: bool = True


@dataclass
class Preflight:
    checks: list[Check] = field(default_factory=list)

    def add(self, name: str, ok: bool, detail: str, fatal: bool = True) -> None:
        self.checks.append(Check(name, ok, detail, fatal))

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok and c.fatal]


def _engine_version(dep: Deployment) -> str | None:
    for dist in dep.profile.distributions:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            continue
    return None


def _gpu_memory() -> list[tuple[int, int]] | None:
    """(total MiB, free MiB) per visible GPU from nvidia-smi, or None without one."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=memory.total,memory.free", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    rows = []
    for line in out.strip().splitlines():
        total, free = (int(x.strip()) for x in line.split(","))
        rows.append((total, free))
    return rows


def check_weights_dir(path: Path) -> tuple[bool, str]:
    """Complete enough to start: config.json and every shard the index names, by name (names that
    would leave the directory are refused: weights.read_index)."""
    if not path.is_dir():
        return False, f"{path} does not exist"
    if not (path / "config.json").is_file():
        return False, f"{path}/config.json is missing"
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(read_index(index).values()))
        except BadInput as exc:
            return False, str(exc)
        missing = [s for s in shards if not (path / s).is_file()]
        if missing:
            return False, f"{len(missing)} of {len(shards)} shards missing, e.g. {missing[0]}"
        return True, f"{len(shards)} shards present"
    if not list(path.glob("*.safetensors")):
        return False, f"no safetensors files in {path}"
    return True, "single-file checkpoint present"


def preflight(dep: Deployment, node: RenderedNode, check_args: bool = True,
              skip_verify: bool = False) -> Preflight:
    pf = Preflight()
    runs_engine = node.group != "router" and node.argv[:2] != ["ray", "start"]
    if runs_engine:
        version = _engine_version(dep)
        pf.add("engine installed", version is not None,
               f"{dep.engine} {version}" if version else f"{dep.engine} is not installed in this environment")
    missing = sorted({cmd[0] for cmd in [*node.setup, node.argv] if find_executable(cmd[0]) is None})
    if missing:  # e.g. `ray` on an image built without it: fail at start, not minutes into the load
        pf.add("executables", False, f"{', '.join(missing)} not installed in this image or environment")
    if check_args and (runs_engine or node.group == "router"):
        from .engines.check import EngineNotInstalled, check_argv

        try:
            errors = [e for e in (check_argv(a) for a in [*node.setup, node.argv]) if e]
            pf.add("arguments", not errors, errors[0] if errors else "accepted by the engine's own parser")
        except EngineNotInstalled as exc:
            pf.add("arguments", True, f"not checked: {exc}", fatal=False)
    if runs_engine and not dep.on_cpu:
        gpus = _gpu_memory()
        if gpus is None:
            pf.add("GPUs", True, "nvidia-smi not found: GPU check skipped", fatal=False)
        else:
            need = dep.gpus_per_node
            p = dep.group(node.group).plan
            low = [i for i, (_, free) in enumerate(gpus) if free * 2**20 < p.weight_bytes + p.overhead_bytes]
            pf.add("GPUs", len(gpus) >= need and not low,
                   f"{len(gpus)} visible (need {need}); "
                   + (f"GPU {low[0]} has less free memory than the plan's weights + overhead" if low else
                      "enough free memory for the plan"))
    if runs_engine and dep.weights.dir:
        ok, detail = check_weights_dir(Path(dep.weights.dir))
        pf.add("weights", ok, detail)
        if skip_verify:
            pf.add("verified", False, "not checked (--skip-verify): the weights may be incomplete or corrupt",
                   fatal=False)
        else:
            # The marker is trusted only while the directory still matches what verify recorded
            # (weights.check_marker); a missing or stale one stops the start.
            pf.add("verified", *check_marker(Path(dep.weights.dir)))
    draft = dep.speculative
    if runs_engine and draft is not None and draft.dir:
        # A staged draft is proven like the target: complete, and verified since (`download` fetches it).
        ok, detail = check_weights_dir(Path(draft.dir))
        pf.add("draft weights", ok, detail)
        if not skip_verify:
            pf.add("draft verified", *check_marker(Path(draft.dir)))
    if runs_engine and Path("/dev/shm").is_dir():
        st = os.statvfs("/dev/shm")
        size = st.f_blocks * st.f_frsize
        # NCCL and the engines' multiprocess queues live in /dev/shm; containers default to 64 MiB.
        want = 1 * 2**30 if dep.gpus_per_node * dep.nodes > 1 else 64 * 2**20
        pf.add("/dev/shm", size >= want, f"{size / 2**30:.1f} GiB", fatal=False)
    if node.port is not None:
        free = _port_free(node.port)
        pf.add("port", free, f"{node.port} {'free' if free else 'already in use'}")
    return pf


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


# --- exec -----------------------------------------------------------------------------------------

def find_executable(name: str) -> str | None:
    """Where a command's program is: this Python for python3, else the one installed next to this Python
    (same venv or image), else PATH; None when there is none. Preflight and exec ask the same question."""
    if name in ("python3", "python"):
        return sys.executable
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name)


def resolve_executable(argv: list[str]) -> list[str]:
    found = find_executable(argv[0])
    if not found:
        raise BadInput(f"{argv[0]} is not on PATH; install the engine or run inside its image", "engine.name")
    return [found, *argv[1:]]


def expand_tree(value: Any, env: Mapping[str, str]) -> Any:
    """expand_refs over every string in a JSON-like value."""
    if isinstance(value, str):
        return expand_refs(value, env)
    if isinstance(value, Mapping):
        return {k: expand_tree(v, env) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [expand_tree(v, env) for v in value]
    return value


def materialize(node: RenderedNode, env: Mapping[str, str]) -> tuple[list[list[str]], list[str], dict[str, str]]:
    """Setup commands, argv and full environment with every ${VAR} reference filled in. A startup
    file's variable stands for its path, which exists only once write_startup_files ran: until then
    a placeholder keeps this usable as the early check (dry runs, preflight)."""
    env = {**{f.var: f"<{f.var}>" for f in node.startup_files}, **env}
    for f in node.startup_files:
        filled = expand_tree(f.content, env)  # a missing secret is bad input before anything is written
        if f.no_leading_dash:
            for key, value in filled.items():
                if isinstance(value, str) and value.startswith("-"):
                    raise BadInput(f"the value for {key} starts with '-', which this engine's config file "
                                   "cannot pass (it becomes a command-line option); use one that does not",
                                   REF.sub(r"\1", str(f.content[key])))
    for name in node.needs_env:
        expand_refs("${" + name + "}", env)
    setup = [[expand_refs(a, env) for a in cmd] for cmd in node.setup]
    argv = [expand_refs(a, env) for a in node.argv]
    child_env = dict(env)
    child_env.update({k: expand_refs(v, env) for k, v in node.env.items()})
    return setup, argv, child_env


def _private_dir() -> Path:
    """A private directory on a memory-backed filesystem: a secret never touches a disk."""
    for base in (os.environ.get("XDG_RUNTIME_DIR"), "/dev/shm"):
        if base and Path(base).is_dir() and os.access(base, os.W_OK):
            return Path(tempfile.mkdtemp(prefix="kimi-deploy-", dir=base))
    return Path(tempfile.mkdtemp(prefix="kimi-deploy-"))


def write_startup_files(node: RenderedNode, env: Mapping[str, str]) -> dict[str, str]:
    """Write each startup file (mode 0600, in a new 0700 directory on tmpfs); {var: path}."""
    paths: dict[str, str] = {}
    if not node.startup_files:
        return paths
    folder = _private_dir()
    for i, f in enumerate(node.startup_files):
        path = folder / f"{i}{f.suffix}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            # UTF-8, not \u escapes: YAML readers decode escaped surrogate pairs as two lone characters
            json.dump(expand_tree(f.content, env), fh, ensure_ascii=False)
        paths[f.var] = str(path)
    return paths


def exec_node(node: RenderedNode, env: Mapping[str, str]) -> None:
    """Run setup commands, then replace this process with the engine (signals go straight to it)."""
    full_env = {**env, **write_startup_files(node, env)}
    setup, argv, child_env = materialize(node, full_env)
    for cmd in setup:
        done = subprocess.run(resolve_executable(cmd), env=child_env)
        if done.returncode != 0:
            raise OperationFailed(f"setup command failed (exit {done.returncode}): {cmd[0]} {cmd[1]}")
    argv = resolve_executable(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(argv[0], argv, child_env)

"""What every engine shares: the rendered command of one node, the engine interface each engine module
fills in once (flags, secrets, gates, router), and references to values known only on the node
(addresses, secrets), which `render` prints as ${NAME} and `serve` fills in from the environment."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ..deployment import Deployment, Group
from .versions import PARSER_FEATURES, Feature


# A ${NAME} reference as env_ref writes it: what `render` prints as a shell expansion and `serve` fills in.
REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def env_ref(name: str) -> str:
    """A reference to an environment variable (never its value)."""
    return "${" + name + "}"


def parser_flags(dep: Deployment, features: list[Feature], tool_prefix: tuple[str, ...] = ()) -> list[str]:
    """--tool-call-parser / --reasoning-parser, named alike by both engines (vllm cli_args.py; sglang
    server_args.py); `tool_prefix` is what an engine needs before its tool parser flag."""
    argv: list[str] = []
    if dep.tool_parser:
        argv += [*tool_prefix, "--tool-call-parser", dep.tool_parser]
    if dep.reasoning_parser:
        argv += ["--reasoning-parser", dep.reasoning_parser]
    for kind, name in (("tool", dep.tool_parser), ("reasoning", dep.reasoning_parser)):
        if name and (kind, name) in PARSER_FEATURES:
            features.append(PARSER_FEATURES[kind, name])
    return argv


ROUTER_WITH_KEY = ["python3", "-m", "kimi_deploy.routers"]


def router_node(dep: Deployment, router: str, launch: list[str], args: list[str]) -> RenderedNode:
    """The P/D router's node. With an API key it starts through kimi_deploy.routers, which sets the key
    inside the process (neither router reads one from the environment; argv is world-readable)."""
    assert dep.router is not None
    if dep.api_key_env:
        argv, needs = [*ROUTER_WITH_KEY, router, "--api-key-env", dep.api_key_env, *args], [dep.api_key_env]
    else:
        argv, needs = [*launch, *args], []
    return RenderedNode(dep.router.rank, "router", argv, {}, group="router", port=dep.router.port, needs_env=needs)


def head_refs(dep: Deployment) -> dict[str, str]:
    """Every group's head address as a reference to its variable."""
    return {g.name: env_ref(g.head_var) for g in dep.groups}


@dataclass(frozen=True)
class StartupFile:
    """A file written at start-up, before the engine runs: how a secret reaches an engine that has no
    environment variable for it (never as a command-line value). `serve` writes `content` as JSON
    (which YAML readers accept too) to a new file, mode 0600, in a private directory on tmpfs,
    named with `suffix`, and sets the variable `var` to its path; the command refers to ${var}.
    String values may be a ${NAME} reference, filled in from the environment."""

    var: str
    content: Mapping[str, Any]
    suffix: str = ".json"
    no_leading_dash: bool = False  # a top-level value may not start with "-" (see engines/sglang.py)


@dataclass
class RenderedNode:
    rank: int
    role: str  # single | head | worker | server | ray-head | ray-worker | prefill-* | decode-* | router
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    serves_http: bool = True  # False for headless workers (no HTTP at all)
    health_only: bool = False  # SGLang rank >= 1: a dummy /health on the port, no API
    setup: list[list[str]] = field(default_factory=list)  # commands run before argv (ray start)
    group: str = "serve"  # serve | prefill | decode | router
    port: int | None = None  # the HTTP port, when the node listens on one
    features: list[Feature] = field(default_factory=list)
    startup_files: list[StartupFile] = field(default_factory=list)
    needs_env: list[str] = field(default_factory=list)  # read by name inside the process (never on argv)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"rank": self.rank, "role": self.role, "argv": self.argv, "env": self.env,
                             "serves_http": self.serves_http, "health_only": self.health_only,
                             "group": self.group, "port": self.port}
        if self.needs_env:
            d["needs_env"] = self.needs_env
        if self.setup:
            d["setup"] = self.setup
        if self.startup_files:
            d["startup_files"] = [{"var": f.var, "suffix": f.suffix, "content": dict(f.content)}
                                  for f in self.startup_files]
        return d


@dataclass(frozen=True, kw_only=True)
class Engine:
    """One engine's renderer, declared once by its module: how one group's nodes are launched, what P/D
    adds, and how the router is started. What the engine is (flags, gates, rules) is its profile."""

    name: str
    group_nodes: Callable[[Deployment, Group, str, list[str]], list[RenderedNode]]  # (dep, group, head, pd flags)
    pd_flags: Callable[[Deployment, Group], list[str]]
    pd_feature: Feature
    router: Callable[[Deployment, Mapping[str, str]], RenderedNode]  # (dep, {group: url})

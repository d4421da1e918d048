"""Check rendered commands with the engines' own argument parsers, when they are installed:
vLLM's `make_arg_parser(FlexibleArgumentParser())` + `validate_parsed_serve_args` and its tool/reasoning
parser registries; SGLang's `ServerArgs.add_cli_args`; the routers' `parse_router_args`. An unknown
flag, a bad value or an unregistered parser name is reported with the engine's own message."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
from typing import Callable

from .. import routers
from .base import ROUTER_WITH_KEY, RenderedNode
from .sglang import LAUNCH
from .sglang import ROUTER as SGLANG_ROUTER
from .vllm import ROUTER as VLLM_ROUTER
from .vllm import VLLM_SERVE


class EngineNotInstalled(Exception):
    pass


def _capture(fn: Callable[[], object]) -> str | None:
    """Run a parser; return its error text (argparse exits 2 after printing) or None when it accepts."""
    buf = io.StringIO()
    try:
        with contextlib.redirect_stderr(buf), contextlib.redirect_stdout(io.StringIO()):
            fn()
    except SystemExit as exc:
        if exc.code in (0, None):
            return None
        lines = [ln for ln in buf.getvalue().splitlines() if ln.strip() and not ln.startswith("usage:")]
        # argparse prefixes "<prog>: error: "; the prog name here is meaningless (python -c, pytest...).
        return re.sub(r"^\S*: error: ", "", lines[-1]) if lines else f"rejected (exit {exc.code})"
    except (ValueError, TypeError, KeyError, argparse.ArgumentError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _vllm(args: list[str]) -> str | None:
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    try:
        try:
            from vllm.utils.argparse_utils import FlexibleArgumentParser
        except ImportError:  # vLLM before #27188 (2025-10-26) moved it to argparse_utils
            from vllm.utils import FlexibleArgumentParser  # type: ignore[no-redef]
        try:
            from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
        except ImportError:
            try:  # vLLM 0.33 moved the serve arguments to vllm/entrypoints/common/cli_args.py
                from vllm.entrypoints.common.cli_args import (  # type: ignore[no-redef]
                    make_arg_parser, validate_parsed_serve_args)
            except ImportError:  # releases before vllm/entrypoints/launchers/ existed (e.g. 0.11)
                from vllm.entrypoints.openai.cli_args import (  # type: ignore[no-redef]
                    make_arg_parser, validate_parsed_serve_args)
        from vllm.reasoning import ReasoningParserManager
        from vllm.tool_parsers import ToolParserManager
    except ImportError as exc:
        raise EngineNotInstalled(f"vllm is not importable here ({exc})") from None

    result: dict[str, argparse.Namespace] = {}

    def parse() -> None:
        ns = make_arg_parser(FlexibleArgumentParser()).parse_args(args)
        validate_parsed_serve_args(ns)
        result["ns"] = ns

    error = _capture(parse)
    if error:
        return error
    ns = result["ns"]
    # vLLM checks parser names only when the server starts (validate_api_server_args in
    # vllm/entrypoints/openai/api_server.py): check them here.
    if getattr(ns, "tool_call_parser", None) and ns.tool_call_parser not in ToolParserManager.list_registered():
        return f"unknown tool call parser {ns.tool_call_parser!r}"
    if getattr(ns, "reasoning_parser", None) and ns.reasoning_parser not in ReasoningParserManager.list_registered():
        return f"unknown reasoning parser {ns.reasoning_parser!r}"
    lb_modes = [m for m in ("data_parallel_hybrid_lb", "data_parallel_external_lb",
                            "data_parallel_multi_port_external_lb") if getattr(ns, m, False)]
    if len(lb_modes) > 1:  # raised only in vLLM's serve command (vllm/entrypoints/cli/serve.py), not by the parser
        return f"conflicting load-balancing modes: {', '.join(lb_modes)}"
    if getattr(ns, "headless", False) and getattr(ns, "data_parallel_hybrid_lb", False):
        return "--headless is not compatible with --data-parallel-hybrid-lb"
    return None


def _sglang(args: list[str]) -> str | None:
    try:
        from sglang.srt.server_args import ServerArgs
    except ImportError as exc:
        raise EngineNotInstalled(f"sglang is not importable here ({exc})") from None
    parser = argparse.ArgumentParser(allow_abbrev=False)  # abbreviations are how --tp slips through
    ServerArgs.add_cli_args(parser)
    return _capture(lambda: parser.parse_args(args))


def _router(module: str, args: list[str]) -> str | None:
    try:
        mod = __import__(f"{module}.launch_router", fromlist=["parse_router_args"])
    except ImportError as exc:
        raise EngineNotInstalled(f"{module} is not importable here ({exc})") from None
    return _capture(lambda: mod.parse_router_args(args))


def check_argv(argv: list[str]) -> str | None:
    """None when the engine (or router) accepts argv, else its error. Raises EngineNotInstalled."""
    if argv[:2] == VLLM_SERVE:
        return _vllm(argv[2:])
    if argv[: len(LAUNCH)] == LAUNCH:
        return _sglang(argv[len(LAUNCH):])
    if argv[: len(VLLM_ROUTER)] == VLLM_ROUTER:
        return _router("vllm_router", argv[len(VLLM_ROUTER):])
    if argv[: len(SGLANG_ROUTER)] == SGLANG_ROUTER:
        return _router("sglang_router", argv[len(SGLANG_ROUTER):])
    if argv[: len(ROUTER_WITH_KEY)] == ROUTER_WITH_KEY:  # a router started with its key from the env
        try:
            router, _, args = routers.split_argv(argv[len(ROUTER_WITH_KEY):])
        except ValueError as exc:
            return str(exc)
        return _router(f"{router}_router", args)
    if argv[:2] == ["ray", "start"]:
        # Ray is not a vLLM dependency any more (vllm #36170); the two flags are fixed strings from
        # vllm examples/online_serving/run_cluster.sh.
        return None
    return f"not an engine command: {' '.join(argv[:3])}"


def check_nodes(nodes: list[RenderedNode]) -> list[tuple[int, str, str]]:
    """(rank, role, error) for every rejected command."""
    bad = []
    for node in nodes:
        for argv in [*node.setup, node.argv]:
            err = check_argv(argv)
            if err:
                bad.append((node.rank, node.role, err))
    return bad


def main() -> None:
    """`python -m kimi_deploy.engines.check`: read a JSON list of argv lists on stdin, print a JSON list of
    {"argv", "error", "engine_version"}. How a second vLLM release is checked: only one vllm package can be
    imported per process, so tests run this with that release first on PYTHONPATH (tests/test_speculative.py
    runs vLLM 0.33 this way; the CUDA wheel needs VLLM_TARGET_DEVICE=cpu to build its config on a CPU host)."""
    import json
    import sys
    from importlib.metadata import PackageNotFoundError

    argvs = json.load(sys.stdin)
    try:
        import vllm
        version = getattr(vllm, "__version__", None)
    except (ImportError, PackageNotFoundError):
        version = None
    out = [{"argv": a, "error": check_argv(a), "engine_version": version} for a in argvs]
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()

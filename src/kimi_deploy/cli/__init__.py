"""The `kimi-deploy` command line (typer + rich), one module per command group (the layout of
huggingface_hub's cli/): plan.py (validate, plan), launch.py (render, serve, wait, k8s), weights.py
(download, verify), bench.py (bench, bench diff, sim), compare.py, tiny.py (tiny-model). Each command is
a thin layer over a library module. Errors are one clear line on stderr with exit codes 2 (bad input)
and 3 (does not fit), 1 when the operation failed, and a traceback only with --debug."""

from __future__ import annotations

import sys

import typer
from rich.markup import escape

from ..engines.profiles import PROFILES
from ..errors import KimiDeployError
from ..secrets import scrub
from . import bench, compare, launch, plan, tiny, weights
from ._common import err

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Plan, launch, benchmark and verify self-hosted Kimi K2 deployments on vLLM and SGLang.",
    pretty_exceptions_enable=False,
)


# The libraries whose releases decide whether kimi-deploy talks to an endpoint, the Hub or an engine (each
# engine under its first distribution name).
ENGINE_FACING = ("openai", "httpx2", "huggingface_hub", "pydantic", "typer",
                 *(p.distributions[0] for p in PROFILES.values()))


def versions() -> dict[str, str | None]:
    """kimi-deploy's version and those of the engine-facing libraries installed beside it (None: absent).
    Read from the installed distributions' metadata, so nothing heavy (vLLM, torch) is imported."""
    from importlib import metadata

    found: dict[str, str | None] = {}
    for name in ("kimi-deploy", *ENGINE_FACING):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def _print_version(value: bool) -> None:
    if value:
        for name, version in versions().items():
            typer.echo(f"{name} {version or 'not installed'}")
        raise typer.Exit()


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
          version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="Print the version of kimi-deploy and of the libraries it drives "
                                            "(openai, huggingface_hub, vLLM, SGLang) and exit.")) -> None:
    """--debug is read by main() before the app runs; declared here so it shows in --help."""


for group in (plan, launch, weights, compare, tiny):
    group.register(app)
app.add_typer(bench.bench_app, name="bench")
bench.register(app)


def main() -> None:
    """Console-script entry: run the app, turning our errors into one line and an exit code."""
    debug = "--debug" in sys.argv[1:]
    try:
        code = app(standalone_mode=False)
    except KimiDeployError as exc:
        if debug:
            _traceback_exit(exc.exit_code)
        err.print(f"[red]error:[/red] {escape(scrub(str(exc)))}", highlight=False)
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        sys.exit(130)
    except Exception as exc:
        # Usage errors (bad option values, unknown commands) come from the click that typer bundles:
        # they know how to print themselves and carry exit code 2.
        if hasattr(exc, "show") and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            sys.exit(exc.exit_code)
        if debug:
            _traceback_exit(1)
        err.print(f"[red]internal error:[/red] {type(exc).__name__}: {escape(scrub(str(exc)))} "
                  "(run with --debug for details)")
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


def _traceback_exit(code: int) -> None:
    """--debug: the traceback of the error being handled, with every known secret's value scrubbed (a
    message or an argument in it may carry a token), then exit with `code`."""
    import traceback

    sys.stderr.write(scrub(traceback.format_exc()))
    sys.exit(code)


__all__ = ["app", "main"]

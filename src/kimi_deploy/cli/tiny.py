"""`tiny-model`: a tiny Kimi-K2-architecture checkpoint for CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import err, out


def tiny_model(
    dest: Annotated[Path, typer.Argument(help="Directory to write the checkpoint into.")],
    seed: Annotated[int, typer.Option(help="Training seed (same seed, same checkpoint).")] = 0,
    steps: Annotated[int, typer.Option(min=1, help="Training steps.")] = 300,
    force: Annotated[bool, typer.Option("--force", help="Overwrite a directory that is not a tiny-k2 checkpoint.")] = False,
) -> None:
    """A tiny Kimi-K2-architecture checkpoint for CPU, trained briefly to call the suite's tools."""
    from ..tiny import build

    path = build(dest, seed=seed, steps=steps, force=force, log=lambda m: err.print(m))
    out.print(f"tiny-k2 ready in {path}")


def register(app: typer.Typer) -> None:
    app.command("tiny-model")(tiny_model)

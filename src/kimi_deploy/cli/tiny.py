"""`tiny-model`: a tiny Kimi-K2-architecture checkpoint for CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..tiny.model import DEFAULT_STEPS
from ._common import err, out


def tiny_model(
    dest: Annotated[Path, typer.Argument(help="Directory to write the checkpoint into.")],
    seed: Annotated[int, typer.Option(help="Training seed (same seed, same checkpoint).")] = 0,
    steps: Annotated[int, typer.Option(min=1, help="Training steps.")] = DEFAULT_STEPS,
    force: Annotated[bool, typer.Option("--force", help="Overwrite a directory that is not a tiny-k2 checkpoint.")] = False,
    prebuilt: Annotated[Optional[Path], typer.Option(
        "--prebuilt", help="A prebuilt checkpoint (with its prebuilt.json manifest) to take instead of training; "
                           "refused unless it was made from the same training inputs.")] = None,
) -> None:
    """A tiny Kimi-K2-architecture checkpoint for CPU, trained briefly to call the suite's tools."""
    from ..errors import BadInput
    from ..tiny import build

    # Before minutes of training: DEST (or a folder on the way to it) being a file is bad input, not an
    # internal error after the work is done.
    for p in (dest.expanduser(), *dest.expanduser().parents):
        if p.exists() or p.is_symlink():
            if not p.is_dir():
                raise BadInput(f"{p} exists and is not a directory", "DEST")
            break
    path = build(dest, seed=seed, steps=steps, force=force, log=lambda m: err.print(m), prebuilt=prebuilt)
    out.print(f"tiny-k2 ready in {path}")


def register(app: typer.Typer) -> None:
    app.command("tiny-model")(tiny_model)

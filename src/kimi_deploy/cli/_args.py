"""Typer options mapped onto a command's typed arguments (kimi_deploy/args.py): the flag, the default and
the range come from the model's field, so they are written once; the option itself defaults to None
("not given") and the model applies its default and checks its range (exit 2 naming the flag)."""

from __future__ import annotations

from typing import Any

import typer
from rich.markup import escape

from ..args import Args, bounds


def option(model: type[Args], name: str, help: str, *decls: str, default: str | None = None) -> Any:
    """The typer option of field `name` of `model`; `decls` replace the flag (e.g. "--stream/--no-stream"),
    `default` the default as the help shows it (when the field's is not what an operator should read)."""
    info = model.model_fields[name]
    flags = decls or (model.flag(name),)
    value = info.default
    if default is None and not info.is_required() and value not in (None, {}):
        # a boolean shows as the half of its --x/--no-x flag that is the default
        default = flags[0].split("/")[0 if value else 1].lstrip("-") if isinstance(value, bool) else str(value)
    # brackets as typer writes its own notes, escaped: the help is rich markup
    notes = [f"[{rng}]" for rng in [bounds(model, name)] if rng] + ([f"[default: {default}]"] if default else [])
    return typer.Option(*flags, help=" ".join([help, *map(escape, notes)]), show_default=False)

"""What every command group shares: the consoles, choice enums and typed option aliases (one
definition each, with its range checked by typer, not by hand), and small helpers."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from ..endpoint import KIND_CHOICES
from ..engines.profiles import ENGINE_NAMES

out = Console()
err = Console(stderr=True, soft_wrap=True)

EXIT_DOES_NOT_FIT = 3


# One choice per engine profile.
EngineName = Enum("EngineName", {name: name for name in ENGINE_NAMES}, type=str)  # type: ignore[misc]


class PDGroupName(str, Enum):
    prefill = "prefill"
    decode = "decode"


class Source(str, Enum):
    hf = "hf"
    mirror = "mirror"
    s3 = "s3"


ReferenceKind = Enum("ReferenceKind", {k.replace("-", "_"): k for k in KIND_CHOICES}, type=str)  # type: ignore[misc]


class OnOff(str, Enum):
    on = "on"
    off = "off"


class SimDist(str, Enum):
    fixed = "fixed"
    normal = "normal"
    exponential = "exponential"


SpecArg = Annotated[Path, typer.Argument(help="Deployment spec (YAML).")]
NodeRank = Annotated[Optional[int], typer.Option("--node-rank", min=0, help="This node's rank.")]
HeadAddress = Annotated[Optional[str], typer.Option("--head-address", help="The head node's address.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the JSON contract.")]
ApiKeyEnv = Annotated[Optional[str], typer.Option("--api-key-env", help="Env var holding the API key (never the key itself).")]


def finite(value: Optional[float]) -> Optional[float]:
    """Typer callback for every float option: NaN passes click's min/max checks (every comparison with
    it is false) and inf passes a lower bound, so both are refused here as a usage error (exit 2 naming
    the option). Use as `typer.Option(..., callback=finite)`."""
    import math

    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"must be a finite number, got {value}")
    return value

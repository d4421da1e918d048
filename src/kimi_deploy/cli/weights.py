"""`download` and `verify`: fetch exactly what serving needs, and prove a checkpoint is intact."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from ..errors import BadInput
from ..spec import ModelRef, load_spec
from ..weights import MAX_RETRIES
from ._common import Source, err, out


def download(
    spec: Annotated[Optional[Path], typer.Argument(help="Deployment spec (model, revision, weights.*).")] = None,
    model: Annotated[Optional[str], typer.Option(help="Catalog id or Hub repo id.")] = None,
    revision: Annotated[Optional[str], typer.Option(help="Pinned revision (commit, tag or branch).")] = None,
    dest: Annotated[Optional[Path], typer.Option("--dir", help="Target directory.")] = None,
    source: Annotated[Optional[Source], typer.Option(help="Where to fetch from (default hf).")] = None,
    mirror: Annotated[Optional[str], typer.Option(help="Mirror directory or s3://bucket/prefix.")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Parallel file downloads.")] = 8,
    retries: Annotated[int, typer.Option(min=0, max=MAX_RETRIES,
                                         help="Retries per file on 429, 5xx and dropped connections.")] = 5,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Exit instead of waiting when another download holds the directory.")] = False,
) -> None:
    """Fetch exactly the files serving needs, resumably, into a directory shared safely between nodes."""
    from ..catalog import get_model
    from ..deployment import resolve
    from ..weights import REPORT, download as fetch, list_hub, list_mirror, list_s3

    def log(message: str) -> None:
        err.print(escape(message))

    src = source.value if source else None
    draft = None
    if spec is not None:
        s = load_spec(spec)
        dep = resolve(s)
        entry = dep.entry
        # The spec's EAGLE3 draft is fetched too (from the Hub, into weights.dir/draft), when staged.
        draft = dep.speculative if dep.speculative is not None and dep.speculative.dir and dest is None else None
        model = model or (entry.repo if entry else None)
        revision = revision or s.revision or (s.model.revision if isinstance(s.model, ModelRef) else None)
        dest = dest or (Path(s.weights.dir) if s.weights.dir else None)
        src = src or s.weights.source
        mirror = mirror or s.weights.mirror
    src = src or "hf"
    if dest is None:
        raise BadInput("give --dir (or weights.dir in the spec)", "--dir")
    if src == "hf":
        if not model:
            raise BadInput("give --model (a catalog id or Hub repo id)", "--model")
        repo = get_model(model).repo if "/" not in model else model
        listing = list_hub(repo, revision, os.environ.get("HF_TOKEN"), retries=retries, log=log)
    elif not mirror:
        raise BadInput(f"source {src} needs --mirror (a directory or s3:// URL)", "--mirror")
    else:
        listing = list_mirror(mirror) if src == "mirror" else list_s3(mirror)
    err.print(f"{listing.location}" + (f"@{listing.revision}" if listing.revision else "")
              + f": {len(listing.files)} files, {listing.total_bytes / 1e9:,.2f} GB -> {dest}")
    fetches = [(listing, dest)]
    if draft is not None and draft.dir:
        draft_listing = list_hub(draft.source, draft.revision, os.environ.get("HF_TOKEN"), retries=retries, log=log)
        err.print(f"draft {draft_listing.location}@{draft_listing.revision}: {len(draft_listing.files)} files, "
                  f"{draft_listing.total_bytes / 1e9:,.2f} GB -> {draft.dir}")
        fetches.append((draft_listing, Path(draft.dir)))
    for what, where in fetches:
        report = fetch(what, where, workers=workers, retries=retries, wait_for_lock=not no_wait,
                       token=os.environ.get("HF_TOKEN"), log=log,
                       show_progress=err.is_terminal)
        out.print(f"[green]done[/green]: {report.downloaded} downloaded, {report.skipped} already complete, "
                  f"{report.bytes / 1e9:,.2f} GB in {report.seconds:.1f} s ({report.throughput_mb_s:,.1f} MB/s), "
                  f"{report.retries} retries; report in {where / REPORT}")


def verify(
    dest: Annotated[Path, typer.Argument(help="Checkpoint directory.")],
    model: Annotated[Optional[str], typer.Option(help="Catalog id whose architecture config.json must match.")] = None,
    full_hash: Annotated[bool, typer.Option("--hash", help="Also sha256 every shard and compare with the hashes the "
                                            "source published (Hub LFS); recorded in the marker either way.")] = False,
    workers: Annotated[Optional[int], typer.Option(min=1, help="Hashing threads (default: CPU count).")] = None,
    check_marker: Annotated[bool, typer.Option("--check-marker", help="Only re-check an existing marker (what "
                                               "`serve` preflight does: shard sizes and mtimes, index hash); "
                                               "exit 1 if it is missing or the files changed.")] = False,
) -> None:
    """Prove a checkpoint is complete and intact; write the marker serve and Kubernetes trust."""
    from ..errors import OperationFailed
    from ..weights import VERIFY_MARKER, check_marker as recheck, verify as check

    if check_marker:
        ok, detail = recheck(dest)
        if not ok:
            raise OperationFailed(detail)
        out.print(f"[green]marker valid[/green] {escape(str(dest))}: {escape(detail)}")
        return
    result = check(dest, model=model, full_hash=full_hash, workers=workers, show_progress=err.is_terminal)
    for note in result.notes:
        err.print(f"note: {escape(note)}")
    if not result.ok:
        raise BadInput("verification failed:\n  " + "\n  ".join(result.problems), str(dest))
    hashes = ("sha256 matched the source's hashes" if result.compared else
              "sha256 computed, NOT compared (no source hashes)" if result.hashed else
              "headers and sizes only, no sha256 (add --hash)")
    out.print(f"[green]verified[/green] {escape(str(dest))}: {result.files} shards, {result.bytes / 1e9:,.3f} GB, "
              f"{hashes}, in {result.seconds:.1f} s; marker {escape(str(dest / VERIFY_MARKER))}")


def register(app: typer.Typer) -> None:
    app.command()(download)
    app.command()(verify)

"""compare's result directory (--output): what a run writes there, and what happens to a previous run's
files. Like bench (bench.check_files), a directory holding a previous run is bad input unless the run is
told what to do with it, and that is decided before anything is asked or written:

- neither flag: exit 2 naming the directory, --resume and --overwrite; every file stays as it was;
- --resume: the recorded answers are reused and only the missing ones asked (run.Store, which still
  refuses answers recorded for another suite, model or endpoint);
- --overwrite: the previous run's files (RESULT_FILES, nothing else in the directory) are ignored, and
  removed when the new run writes its first byte: a run that stops before that (bad input, an endpoint
  that does not answer /v1/models) leaves them as they were. A --reference-file inside the directory is
  read, never removed."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import BadInput
from ..outputs import check_output_dir

# Everything a compare run writes into --output.
RECORDS = ("local.jsonl", "local-stream.jsonl", "reference.jsonl")
RESULT_FILES = (*RECORDS, "summary.json", "report.md", "report.html")


class ResultDir:
    """The --output directory of one run, made (outputs.check_output_dir) once the flags are consistent."""

    def __init__(self, path: Path, *, resume: bool = False, overwrite: bool = False,
                 keep: Path | None = None) -> None:
        if resume and overwrite:
            raise BadInput("give --resume (continue the run in --output) or --overwrite (replace it), not both",
                           "--overwrite")
        check_output_dir(path, "--output")
        self.path = path
        self.previous = [n for n in RESULT_FILES if os.path.lexists(path / n)]
        odd = [n for n in self.previous if (path / n).exists() and not (path / n).is_file()]
        if odd:
            raise BadInput(f"{path / odd[0]} is not a file: move it, or give another --output", "--output")
        if self.previous and not (resume or overwrite):
            raise BadInput(f"{path} holds a previous compare run ({', '.join(self.previous)}); give another "
                           "--output, --resume to continue it (only the answers it lacks are asked), or "
                           "--overwrite to replace it", "--output")
        self.resume = resume
        self.fresh = overwrite  # the previous run's answers are not read
        self._keep = keep.resolve() if keep is not None else None
        self._pending = list(self.previous) if overwrite else []

    def claim(self) -> None:
        """Called before each write of the run: the first one removes the previous run's files (--overwrite)."""
        pending, self._pending = self._pending, []
        for name in pending:
            p = self.path / name
            if self._keep is not None and p.resolve() == self._keep:
                continue
            p.unlink(missing_ok=True)  # a symbolic link goes, never what it points to

    def write_text(self, name: str, text: str) -> None:
        """`name` whole or not at all (a temporary file renamed over it)."""
        self.claim()
        tmp = self.path / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, self.path / name)

"""The documentation: the generated reference pages match the code, every relative link (and anchor)
in README.md, CONTRIBUTING.md and docs/ points at something that exists, and README.md stays a short
front page. No network, no engine: the generator imports the CLI and the spec models only."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "reference"
GENERATED = ("cli.md", "spec.md")
README_LIMIT = 15_000


def doc_files() -> list[Path]:
    return [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").rglob("*.md"))]


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen-docs.py"), "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, f"scripts/gen-docs.py failed:\n{proc.stdout}\n{proc.stderr}"
    return out


@pytest.mark.parametrize("name", GENERATED)
def test_generated_reference_is_current(generated: Path, name: str) -> None:
    committed = REFERENCE / name
    assert committed.is_file(), f"docs/reference/{name} is missing: run python scripts/gen-docs.py"
    fresh = (generated / name).read_text(encoding="utf-8")
    old = committed.read_text(encoding="utf-8")
    if fresh != old:
        import difflib
        diff = "".join(list(difflib.unified_diff(old.splitlines(True), fresh.splitlines(True),
                                                 f"committed docs/reference/{name}", "generated"))[:60])
        pytest.fail(f"docs/reference/{name} is stale: run python scripts/gen-docs.py\n{diff}")


# --- links ---------------------------------------------------------------------------------------------

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
EXPLICIT_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"")


def prose_lines(text: str):
    """(line number, line) outside fenced code blocks."""
    fenced = False
    for n, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield n, line


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: markup dropped, lower case, punctuation removed, spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # [text](url) -> text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    text = "".join(c for c in text.lower() if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        found.update(EXPLICIT_ANCHOR.findall(line))
        m = HEADING.match(line)
        if m:
            slug = github_slug(m.group(2))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def links(path: Path):
    """(line number, target) of every link in a Markdown file, code spans and blocks left out."""
    for n, line in prose_lines(path.read_text(encoding="utf-8")):
        line = CODE_SPAN.sub("", line)
        for target in INLINE_LINK.findall(line):
            yield n, target
        m = REFERENCE_DEF.match(line)
        if m:
            yield n, m.group(1)


def broken_links(path: Path) -> list[str]:
    problems = []
    for n, target in links(path):
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):  # http:, https:, mailto:, ...
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / unquote(file_part)).resolve() if file_part else path
        where = f"{path.relative_to(ROOT)}:{n}: {target}"
        if not dest.exists():
            problems.append(f"{where} (no such file)")
        elif not str(dest).startswith(str(ROOT)):
            problems.append(f"{where} (outside the repository)")
        elif anchor and dest.suffix == ".md" and unquote(anchor) not in anchors(dest):
            problems.append(f"{where} (no heading with anchor #{anchor})")
    return problems


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    problems = broken_links(path)
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_link_checker_sees_links() -> None:
    """The checker itself: it finds links (outside code) and GitHub's anchors."""
    readme = ROOT / "README.md"
    assert any(target.startswith("docs/") for _, target in links(readme))
    assert github_slug("Measured: `bench` vs its peers (2026)") == "measured-bench-vs-its-peers-2026"
    assert github_slug("Speculative decoding, multimodal settings") == "speculative-decoding-multimodal-settings"


def test_readme_is_short() -> None:
    size = (ROOT / "README.md").stat().st_size
    assert size < README_LIMIT, f"README.md is {size:,} bytes; keep it under {README_LIMIT:,} (move detail into docs/)"

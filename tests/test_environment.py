"""The environment scripts/setup-env.sh builds is the lock in requirements/ (scripts/lock.sh), the
package's published ranges admit it, and `kimi-deploy --version` reports what is installed."""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from .conftest import ROOT, run_cli

LOCKS = ("lock.txt", "sglang.txt", "vllm-newest.txt", "guidellm.txt")
# the majors that broke a fresh install before (issue: openai 3 / httpx2, huggingface_hub 2)
CAPPED = ("openai", "huggingface-hub", "httpx2", "pydantic", "typer")


def _pins(name: str) -> dict[str, tuple[str, list[str]]]:
    """package -> (version, hashes) of one lock file."""
    pins: dict[str, tuple[str, list[str]]] = {}
    current = None
    for line in (ROOT / "requirements" / name).read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)", line)
        if m:
            current = canonicalize_name(m[1])
            pins[current] = (m[2], [])
        elif current and (h := re.search(r"--hash=sha256:([0-9a-f]{64})", line)):
            pins[current][1].append(h[1])
    return pins


def test_every_locked_package_has_its_hashes() -> None:
    for name in LOCKS:
        pins = _pins(name)
        assert pins, name
        assert {p for p, (_, hashes) in pins.items() if not hashes} == set(), name
    assert not {"torch", "torchvision", "torchaudio", "torchcodec"} & set(_pins("lock.txt"))


def test_the_installed_environment_is_the_lock() -> None:
    """What the tests run on is exactly requirements/lock.txt (torch, installed by setup-env.sh from its
    CPU build, aside)."""
    wrong = {}
    for package, (version, _) in _pins("lock.txt").items():
        try:
            got = metadata.version(package)
        except metadata.PackageNotFoundError:
            got = None
        if got is None or Version(got) != Version(version):
            wrong[package] = (version, got)
    assert wrong == {}
    assert metadata.version("sglang") == _pins("sglang.txt")["sglang"][0]
    newest = sorted((Path(sys.prefix) / "vllm-newest").glob("vllm-*.dist-info"))
    assert [d.name for d in newest] == [f"vllm-{_pins('vllm-newest.txt')['vllm'][0]}.dist-info"]
    guidellm = sorted((Path(sys.prefix) / "guidellm").glob("guidellm-*.dist-info"))
    assert [d.name for d in guidellm] == [f"guidellm-{_pins('guidellm.txt')['guidellm'][0]}.dist-info"]


def test_the_published_ranges_admit_the_lock_and_cap_the_majors_that_broke() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    reqs += [Requirement(r) for group in ("dev", "cpu") for r in project["optional-dependencies"][group]]
    pins = _pins("lock.txt")
    for req in reqs:
        name = canonicalize_name(req.name)
        if req.marker is not None and not req.marker.evaluate():
            continue
        assert name in pins, f"{name} is a dependency but not in the lock (run scripts/lock.sh)"
        assert req.specifier.contains(pins[name][0], prereleases=True), (str(req), pins[name][0])
    by_name = {canonicalize_name(r.name): r for r in reqs}
    for name in CAPPED:
        assert any(s.operator == "<" for s in by_name[name].specifier), f"{name} has no upper bound"
    assert "httpx" not in by_name  # kimi-deploy uses httpx2, the HTTP stack of openai 3 and huggingface_hub 2


def test_version_reports_the_engine_facing_libraries() -> None:
    proc = run_cli("--version")
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    assert lines["kimi-deploy"] == metadata.version("kimi-deploy")
    pins = _pins("lock.txt")
    for name in ("openai", "huggingface_hub", "httpx2", "pydantic", "typer"):
        assert lines[name] == pins[canonicalize_name(name)][0], name
    assert lines["vllm"] == metadata.version("vllm") and lines["sglang"] == _pins("sglang.txt")["sglang"][0]

"""catalog.py facts that depend on where kimi-deploy runs."""

from __future__ import annotations

from pathlib import Path

from kimi_deploy.catalog import get_gpu


def test_the_cpu_device_has_the_hosts_memory() -> None:
    """A CPU deployment is planned against this host's RAM (vLLM's CPU backend sizes from it), read here
    independently from /proc/meminfo."""
    kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal:"))
    assert abs(get_gpu("cpu").memory_gib - kib / 2**20) / (kib / 2**20) < 0.01

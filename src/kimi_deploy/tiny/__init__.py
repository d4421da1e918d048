"""tiny-k2: a Kimi-K2-architecture model small enough for CPU (see model.py)."""

from .model import build, cache_root

__all__ = ["build", "cache_root"]

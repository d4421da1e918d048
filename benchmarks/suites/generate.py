"""Regenerate the built-in comparison suites (tool-calls, chat, thinking) next to this file.

Run: .venv/bin/python benchmarks/suites/generate.py   (tests check the committed files are in sync)
"""

from pathlib import Path

from kimi_deploy.compare.suites import generate

if __name__ == "__main__":
    for p in generate(Path(__file__).resolve().parent):
        print(f"wrote {p} ({sum(1 for _ in p.open())} requests)")

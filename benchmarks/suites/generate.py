"""Regenerate the built-in comparison suites (tool-calls, chat, thinking) inside the package, where a
built wheel carries them: src/kimi_deploy/suites/*.jsonl.

Run: .venv/bin/python benchmarks/suites/generate.py   (tests check the committed files are in sync)
"""

from pathlib import Path

from kimi_deploy.compare.suites import generate

OUT = Path(__file__).resolve().parents[2] / "src" / "kimi_deploy" / "suites"

if __name__ == "__main__":
    for p in generate(OUT):
        print(f"wrote {p} ({sum(1 for _ in p.open())} requests)")

"""Regenerate the built-in comparison suites (tool-calls: 316 requests; tool-calls-flat; chat; thinking) from the tool suite
(src/kimi_deploy/toolsuite.py), deterministically for a seed. By default they are written inside the
package, where a built wheel carries them (src/kimi_deploy/suites/*.jsonl); tests regenerate them into a
temporary directory and check the committed files are byte-identical.

Run: .venv/bin/python benchmarks/suites/generate.py [--out DIR] [--seed N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kimi_deploy.suites.suitegen import generate

OUT = Path(__file__).resolve().parents[2] / "src" / "kimi_deploy" / "suites"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=OUT, help=f"directory to write the suites into (default: {OUT})")
    ap.add_argument("--seed", type=int, default=7, help="random seed (default: 7, the committed suites')")
    args = ap.parse_args(argv)
    if args.out.exists() and not args.out.is_dir():
        ap.error(f"--out: {args.out} exists and is not a directory")
    for p in generate(args.out, seed=args.seed):
        print(f"wrote {p} ({sum(1 for _ in p.open())} requests)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

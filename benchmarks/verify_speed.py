"""Full-hash verification throughput: kimi-deploy's parallel sha256 (each shard read once, shards hashed
on all cores) vs `sha256sum` over the same shards one after another, on the same machine in the same
run. Target: >= 1.7x on a 2-core machine.

Run: .venv/bin/python benchmarks/verify_speed.py [--shards 4] [--mb 512] [--repeat 3]
The shards are random bytes in a temporary directory; both tools read them from the page cache (warmed
first) so the comparison measures hashing, not the disk.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kimi_deploy.weights import hash_files


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--mb", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(args.shards):
            p = Path(tmp) / f"model-{i + 1:05d}-of-{args.shards:05d}.safetensors"
            with open(p, "wb") as fh:
                for _ in range(args.mb):
                    fh.write(os.urandom(2**20))
            paths.append(p)
        total = sum(p.stat().st_size for p in paths)
        for p in paths:  # warm the page cache for both contenders
            p.read_bytes()
        ours, theirs, single = [], [], []
        for _ in range(args.repeat):
            t = time.perf_counter()
            out = subprocess.run(["sha256sum", *map(str, paths)], capture_output=True, text=True, check=True).stdout
            theirs.append(time.perf_counter() - t)
            t = time.perf_counter()
            digests = hash_files(paths)
            ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            hash_files(paths, workers=1)
            single.append(time.perf_counter() - t)
            expected = {Path(line.split()[1]).name: line.split()[0] for line in out.splitlines()}
            assert {p.name: d for p, d in digests.items()} == expected, "digests differ from sha256sum"
        o, s, one = statistics.median(ours), statistics.median(theirs), statistics.median(single)
        print(f"{args.shards} shards x {args.mb} MiB = {total / 2**30:.2f} GiB, {os.cpu_count()} cores, "
              f"median of {args.repeat}")
        print(f"sha256sum, one after another : {s:6.2f} s  {total / 2**20 / s:7.1f} MiB/s")
        print(f"kimi-deploy verify --hash    : {o:6.2f} s  {total / 2**20 / o:7.1f} MiB/s")
        print(f"same code, one thread        : {one:6.2f} s  {total / 2**20 / one:7.1f} MiB/s")
        print(f"speed-up vs sha256sum: {s / o:.2f}x (target >= 1.7x); of which parallel hashing: {one / o:.2f}x, "
              f"OpenSSL's sha256 (SHA extensions where the CPU has them) vs coreutils': {s / one:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

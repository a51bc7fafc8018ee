"""`python -m bench [--quick] [--only NAME ...]`: run the CPU benchmarks one after another.

They run in this one process, one at a time, so diffusers is imported once and no two
benchmarks compete for the CPU. Figures go to stdout; `--json-dir` also keeps each
benchmark's figures as JSON (docs/performance.md is written from those). The GPU
benchmark is separate: `python -m bench.gpu` (see docs/performance.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench import (
    cache,
    control,
    durability,
    inpaint,
    latency,
    live,
    live_chain,
    overhead,
    previews,
    queue,
    upscale,
)
from bench.common import add_profile_args, profile_from, quiet_and_threads

BENCHMARKS = {
    "overhead": overhead.run,
    "previews": previews.run,
    "latency": latency.run,
    "cache": cache.run,
    "inpaint": inpaint.run,
    "queue": queue.run,
    "durability": durability.run,
    "control": control.run,
    "live": live.run,
    "live_chain": live_chain.run,
    "upscale": upscale.run,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    add_profile_args(parser)
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run only these")
    parser.add_argument("--json-dir", type=Path, help="write <name>.json figures here")
    args = parser.parse_args(argv)
    quiet_and_threads(args.threads)
    profile = profile_from(args)
    started = time.monotonic()
    failed = []
    for name in args.only or list(BENCHMARKS):
        json_path = args.json_dir / f"{name}.json" if args.json_dir else None
        try:
            BENCHMARKS[name](profile, json_path)
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            failed.append(name)
            print(f"  {name} FAILED: {type(exc).__name__}: {exc}", flush=True)
    print(f"\nAll benchmarks: {time.monotonic() - started:.0f} s; failed: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

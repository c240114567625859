"""`admn generate OUT_DIR [--frames N] [--seed S] [--scene NAME]`."""

from __future__ import annotations

import argparse
import sys
import time

from admn_ros.data.errors import DataError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", metavar="OUT_DIR", help="directory to create (must be "
                        "absent or empty)")
    parser.add_argument("--frames", type=int, default=1000, help="frames on the ~15 Hz camera "
                        "grid (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--scene", default="default", help="scene name in config/scenes/ or a "
                        "YAML path (default: default)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from admn_ros.data.generate import generate_recording

    start = time.perf_counter()
    try:
        out = generate_recording(args.out_dir, frames=args.frames, seed=args.seed,
                                 scene=args.scene, progress=not args.quiet)
    except (DataError, ValueError) as err:
        print(f"admn generate: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.frames} frames to {out} in {time.perf_counter() - start:.1f} s")
    return 0

"""`admn bag from-gdtm IN_DIR OUT.mcap` and `admn bag to-gdtm IN.mcap OUT_DIR`."""

from __future__ import annotations

import argparse
import sys
import time

from admn_ros.data.errors import DataError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bag_command", metavar="ACTION", required=True)
    p = sub.add_parser("from-gdtm", help="GDTM recording -> rosbag2 MCAP",
                       description="GDTM recording -> rosbag2 MCAP (a single .mcap file, or a "
                                   "rosbag2 directory for other names). Reads a chunk_N or "
                                   "merged folder, an ADMN train/val/test root, or a flat "
                                   "folder; prints what had to be filled or dropped.")
    p.add_argument("in_dir", metavar="IN_DIR", help="recording folder (mocap.hdf5 + "
                   "node_<k>/<sensor>.hdf5, or train/ val/ test/ of those)")
    p.add_argument("--source", default=None, help="data source in config/data.yaml "
                   "`sources` (default: `source` there; auto = admn for files this project "
                   "wrote, gdtm otherwise)")
    p.add_argument("out", metavar="OUT.mcap", help="bag to write")
    p.add_argument("--force", action="store_true", help="replace an existing OUT file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p = sub.add_parser("to-gdtm", help="rosbag2 (MCAP or sqlite3) -> GDTM-layout recording",
                       description="rosbag2 (MCAP or sqlite3) -> GDTM-layout recording")
    p.add_argument("in_bag", metavar="IN.mcap", help="bag file or rosbag2 directory")
    p.add_argument("out_dir", metavar="OUT_DIR", help="directory to create (absent or empty)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from admn_ros.data.bag import bag_to_gdtm, gdtm_to_bag

    start = time.perf_counter()
    try:
        if args.bag_command == "from-gdtm":
            out = gdtm_to_bag(args.in_dir, args.out, progress=not args.quiet,
                              overwrite=args.force, source=args.source,
                              on_report=lambda r: print("\n".join(r.lines())))
        else:
            out = bag_to_gdtm(args.in_bag, args.out_dir, progress=not args.quiet)
    except (DataError, ValueError) as err:
        print(f"admn bag {args.bag_command}: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out} in {time.perf_counter() - start:.1f} s")
    return 0

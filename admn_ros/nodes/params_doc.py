"""docs/PARAMETERS.md, generated from the nodes' declarations (their `PARAMS` specs and the
defaults in config/nodes.yaml), so the table cannot drift from the code.

    python -m admn_ros.nodes.params_doc --write   # regenerate docs/PARAMETERS.md
    python -m admn_ros.nodes.params_doc --check   # exit 1 when the committed table is stale
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from admn_ros.nodes.common import node_defaults, param_spec, share_dir

EXECUTABLES = ("power_monitor", "controller", "fusion", "corruption_injector", "frames",
               "bag_player")  # node admn_<executable>, module admn_ros.nodes.<executable>_node
DOC = Path("docs") / "PARAMETERS.md"
HEADER = """# Node parameters

Generated from the nodes' declarations by `python -m admn_ros.nodes.params_doc --write`
(a test checks that this file matches them); defaults come from `config/nodes.yaml`, which
`ros2 launch` and `admn run` pass to every node.

**live** parameters can be changed while the node runs (`ros2 param set /admn_controller
policy naive`); the node checks the value in its on-set callback and refuses one that cannot
work, with the reason. **read-only** ones are fixed once the node has started: `ros2 param
set` refuses them (set them in a params file or with `-p` at start). A range is checked by
ROS before the node sees the value.

In code a parameter is live when its spec in the node's `PARAMS` ends with `LIVE`
(`"sync_slop_s": ("...", 0.0, 1.0, LIVE)`) and the node's `on_params(changes)` applies it;
everything else is declared read-only (`admn_ros.nodes.common.declare`).
"""


def cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|")


def fmt(value) -> str:
    return cell("`" + (repr(value) if isinstance(value, str) else str(value)) + "`"
                ).replace("'", '"')


def node_table(executable: str) -> str:
    module = importlib.import_module(f"admn_ros.nodes.{executable}_node")
    name = f"admn_{executable}"
    defaults = node_defaults(name)
    rows = ["| parameter | default | range | change | what it does |",
            "|---|---|---|---|---|"]
    for pname, raw in module.PARAMS.items():
        spec = param_spec(raw)
        rng = "" if spec.lo is None else f"{spec.lo} … {spec.hi}"
        rows.append(f"| `{pname}` | {fmt(defaults[pname])} | {rng} | "
                    f"{'live' if spec.live else 'read-only'} | "
                    f"{cell(spec.description)} |")
    return f"## `{name}` (`ros2 run admn_ros {executable}`)\n\n" + "\n".join(rows) + "\n"


def render() -> str:
    return HEADER + "".join("\n" + node_table(e) for e in EXECUTABLES)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"write {DOC}")
    parser.add_argument("--check", action="store_true", help=f"exit 1 when {DOC} is stale")
    args = parser.parse_args(argv)
    path = share_dir() / DOC
    text = render()
    if args.write:
        path.write_text(text)
        print(f"wrote {path}")
    elif args.check:
        if not path.exists() or path.read_text() != text:
            print(f"{path} is stale: run `python -m admn_ros.nodes.params_doc --write`",
                  file=sys.stderr)
            return 1
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where the package's files are (config/, models/, launch/, the rviz config): one lookup for
every module.

In order: the directory named by `ADMN_SHARE_DIR` (odd layouts), the source tree this module
runs from (development), the ament share directory `share/admn_ros` of the install space
(`colcon build`; found through AMENT_PREFIX_PATH, as `ros2 run` and `ros2 launch` find it).
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE = "admn_ros"
ENV_VAR = "ADMN_SHARE_DIR"
MARKER = Path("config") / "nodes.yaml"  # present in every layout that holds the package's files
CONFIG_SUFFIXES = (".yaml", ".yml")


def share_dir() -> Path:
    """The directory that holds config/, models/ and launch/."""
    override = os.environ.get(ENV_VAR)
    if override:
        path = Path(override).expanduser()
        if not (path / MARKER).is_file():
            raise FileNotFoundError(f"{ENV_VAR}={override}: no {MARKER} there")
        return path
    source = Path(__file__).resolve().parents[1]
    if (source / MARKER).is_file():
        return source
    installed = _ament_share_dir()
    if installed is not None and (installed / MARKER).is_file():
        return installed
    raise FileNotFoundError(
        f"{PACKAGE}: package files not found: not a source checkout, and no {PACKAGE} in "
        f"AMENT_PREFIX_PATH (source install/setup.bash, or set {ENV_VAR})")


def _ament_share_dir() -> Path | None:
    try:
        from ament_index_python.packages import (
            PackageNotFoundError,
            get_package_share_directory,
        )
    except ImportError:
        return None
    try:
        return Path(get_package_share_directory(PACKAGE))
    except PackageNotFoundError:
        return None


def resolve(path: str | Path) -> Path:
    """A path given by a user or a parameter: absolute as it is; relative, the file of that
    name in the share directory when there is one, else the one in the working directory when
    there is one, else the share directory's (glob patterns: `models/controller_*.pt`)."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    shared = share_dir() / p
    return p if p.exists() and not shared.exists() else shared


def config_file(kind: str, name_or_path: str | Path) -> Path:
    """A config file by name (`realsense_ti` -> <share>/config/<kind>/realsense_ti.yaml) or by
    path (resolved as `resolve` does). A missing file is a FileNotFoundError listing the names
    that exist."""
    given = str(name_or_path)
    by_name = Path(given).suffix not in CONFIG_SUFFIXES and "/" not in given
    folder = share_dir() / "config" / kind
    path = folder / f"{given}.yaml" if by_name else resolve(given)
    if not path.is_file():
        known = sorted(p.stem for p in folder.glob("*.yaml"))
        raise FileNotFoundError(f"{kind} config {given!r} not found ({path}); by name: {known}")
    return path

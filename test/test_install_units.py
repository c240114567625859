"""Finding the package's files (admn_ros.paths), topic maps by name, static transforms, and the
runtime requirements for installs that bring their own ROS and torch."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from admn_ros import paths
from admn_ros.nodes.graph import topic_remappings

ROOT = Path(__file__).resolve().parents[1]


def test_source_tree_is_the_share_dir_in_development(monkeypatch):
    monkeypatch.delenv(paths.ENV_VAR, raising=False)
    assert paths.share_dir() == ROOT


def test_env_override_names_a_layout_and_is_checked(monkeypatch, tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "nodes.yaml").write_text("{}\n")
    monkeypatch.setenv(paths.ENV_VAR, str(tmp_path))
    assert paths.share_dir() == tmp_path
    monkeypatch.setenv(paths.ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=paths.ENV_VAR):
        paths.share_dir()


def test_relative_paths_resolve_in_the_share_dir_first(monkeypatch, tmp_path):
    monkeypatch.delenv(paths.ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "nodes.yaml").write_text("{}\n")  # a look-alike in the cwd
    assert paths.resolve("config/nodes.yaml") == ROOT / "config" / "nodes.yaml"
    assert paths.resolve("models/controller_*.pt") == ROOT / "models/controller_*.pt"
    (tmp_path / "mine.yaml").write_text("{}\n")
    assert paths.resolve("mine.yaml").resolve() == (tmp_path / "mine.yaml").resolve()
    assert paths.resolve(tmp_path / "mine.yaml") == tmp_path / "mine.yaml"


def test_topic_maps_by_name_and_by_relative_path_from_outside_the_tree(monkeypatch, tmp_path):
    monkeypatch.delenv(paths.ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    by_name = topic_remappings("realsense_ti")
    assert by_name and by_name == topic_remappings("config/topics/realsense_ti.yaml")
    assert dict(by_name)["node1/camera/color/image_raw"].startswith("/")
    with pytest.raises(FileNotFoundError, match="realsense_ti"):  # lists the known names
        topic_remappings("realsense")


def test_sensor_node_transforms_place_each_node_and_check_the_count():
    from builtin_interfaces.msg import Time

    from admn_ros.nodes.static_tf import sensor_node_transforms, static_transform

    ts = sensor_node_transforms("world", ["node1", "node2"], [1, 2, 3, -4, 5, -6], Time(sec=7))
    assert [(t.header.frame_id, t.child_frame_id) for t in ts] == [("world", "node1"),
                                                                    ("world", "node2")]
    v = ts[1].transform.translation
    assert (v.x, v.y, v.z) == (-4.0, 5.0, -6.0) and ts[1].transform.rotation.w == 1.0
    assert ts[0].header.stamp.sec == 7
    with pytest.raises(ValueError, match="6 numbers"):
        sensor_node_transforms("world", ["node1", "node2"], [1, 2, 3], Time())
    q = static_transform("world", "map", (0, 0, 0), Time(), (0.5, 0.5, 0.5, 0.5)).transform
    assert (q.rotation.x, q.rotation.w) == (0.5, 0.5)


def requirement_names(path: Path) -> list[str]:
    lines = [ln.split("#")[0].strip() for ln in path.read_text().splitlines()]
    return [re.split(r"[<>=!~;\[ ]", ln)[0].lower() for ln in lines if ln]


def test_runtime_requirements_leave_ros_and_torch_to_the_platform():
    runtime = requirement_names(ROOT / "requirements-runtime.txt")
    assert runtime
    assert not [n for n in runtime if n.startswith(("ros-", "torch", "colcon", "catkin"))]
    assert set(runtime) <= set(requirement_names(ROOT / "requirements.in"))  # tested in dev

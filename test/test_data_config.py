"""Data-layer configs load through the core's strict loader: errors name the source and key."""

import pytest

from admn_ros.data.config import load_data_config, load_scene


def test_presets_load_as_frozen_tuples():
    scene, data = load_scene(), load_data_config()
    assert scene.nodes and all(isinstance(n.position, tuple) for n in scene.nodes.values())
    assert data.splits["train"] == (0.0, 0.7)
    hash(data.layout.car_types)


@pytest.mark.parametrize(("raw", "match"), [
    ({"nodes": {"node1": {"position": [0, 1, 0]}}, "foo": 1},
     r"scene: unknown config key\(s\) foo"),
    ({"nodes": {"node1": {"position": "x"}}}, r"scene: nodes\.node1\.position: expected a list"),
    ({"nodes": {"node1": {"position": [0, 1, 0]}}, "timing": {"camera_hz": True}},
     r"timing\.camera_hz: expected float"),
    ({"nodes": {"cam": {"position": [0, 1, 0]}}}, "node names must be node<k>"),
])
def test_scene_errors_name_the_key(raw, match):
    with pytest.raises(ValueError, match=match):
        load_scene(raw)


def test_missing_files_are_value_errors(tmp_path):
    with pytest.raises(ValueError, match="cannot read config"):
        load_data_config(tmp_path / "absent.yaml")
    with pytest.raises(ValueError, match="not found; known scenes"):
        load_scene("nope")
    bad = tmp_path / "data.yaml"
    bad.write_text("splits: {train: [0.0, 0.7]}\nbogus: 1\n")
    with pytest.raises(ValueError, match=rf"{bad}: unknown config key\(s\) bogus"):
        load_data_config(bad)

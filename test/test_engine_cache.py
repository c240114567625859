"""Engine cache: keys follow weights and settings; corrupt entries are detected, warned about,
rebuilt and never used. TensorRT itself is tested only where torch_tensorrt is installed."""

from __future__ import annotations

import logging
import types

import pytest
import torch
from test_engine_fixtures import TINY, tiny_inputs, tiny_modules

from admn_ros.engine import EngineStartupError, make_backend
from admn_ros.engine.cache import (
    EngineCache,
    cache_key,
    cache_key_fields,
    code_version,
    decode_cache_file,
    encode_cache_file,
    read_cache_file,
    weights_hash,
    write_cache_file,
)
from admn_ros.engine.tensorrt import NOT_INSTALLED, tensorrt_unavailable_reason

FIELDS = dict(weights="abc", part="block.rgb.0",
              part_config={"backbone": {"num_heads": 4, "global_pool": "avg"},
                           "input_mean": [0.5]},
              code="0123abcd", shapes=[(3, 65, 128)], precision="fp16", gpu_name="Orin",
              backend_version="trt10.3", dtypes=["torch.float32"])


def test_weights_hash_changes_with_weights():
    model, _ = tiny_modules()
    block = model.backbones["rgb"].blocks[0]
    before = weights_hash(block.state_dict())
    assert weights_hash(block.state_dict()) == before  # deterministic
    with torch.no_grad():
        block.mlp.fc1.weight[0, 0] += 1e-3
    after = weights_hash(block.state_dict())
    assert after != before
    key = lambda w: cache_key(cache_key_fields(**{**FIELDS, "weights": w}))  # noqa: E731
    assert key(after) != key(before)
    assert weights_hash({k: v.half() for k, v in block.state_dict().items()}) != after


@pytest.mark.parametrize("field,value", [
    ("weights", "abd"), ("part", "block.rgb.1"),
    ("part_config", {"backbone": {"num_heads": 8, "global_pool": "avg"}, "input_mean": [0.5]}),
    ("part_config", {"backbone": {"num_heads": 4, "global_pool": "token"},
                     "input_mean": [0.5]}),
    ("part_config", {"backbone": {"num_heads": 4, "global_pool": "avg"}, "input_mean": [0.4]}),
    ("code", "0123abce"), ("shapes", [(6, 65, 128)]), ("precision", "fp32"),
    ("gpu_name", "NVIDIA H100"), ("backend_version", "trt10.4"), ("dtypes", ["torch.float16"]),
])
def test_cache_key_changes_with_every_field(field, value):
    assert cache_key(cache_key_fields(**{**FIELDS, field: value})) != \
        cache_key(cache_key_fields(**FIELDS))
    assert cache_key(cache_key_fields(**FIELDS)) == cache_key(cache_key_fields(**FIELDS))


def test_part_config_and_code_version_follow_what_weights_do_not_hold(tmp_path):
    """Input statistics, head count and pooling change the output but not the state_dict;
    the part's config carries them. Editing a traced source file changes the code version."""
    from admn_ros.core.config import load_model_config
    from admn_ros.engine.parts import part_config

    base = load_model_config(TINY)
    variants = [
        {**TINY, "input_mean": {"rgb": [0.1, 0.2, 0.3]}},
        {**TINY, "backbone": {**TINY["backbone"], "num_heads": 4}},
        {**TINY, "backbone": {**TINY["backbone"], "global_pool": "avg"}},
    ]
    for v in variants:
        assert part_config(load_model_config(v), "block.rgb.1") != part_config(base, "block.rgb.1")
    depth_only = {**TINY, "input_mean": {"depth": [0.3]}}  # another modality's statistics
    assert part_config(load_model_config(depth_only), "stem.rgb") == part_config(base, "stem.rgb")
    assert part_config(load_model_config(depth_only), "fusion") != part_config(base, "fusion")
    src = tmp_path / "fake_part.py"
    src.write_text("X = 1\n")
    mod = types.ModuleType("fake_part")
    mod.__file__ = str(src)
    before = code_version([mod])
    src.write_text("X = 2\n")
    assert code_version([mod]) != before


def test_cache_file_round_trip_and_validation(tmp_path):
    key = cache_key(cache_key_fields(**FIELDS))
    payload = b"\x00engine bytes\xff" * 10
    blob = encode_cache_file(key, payload, {"part": "x"})
    assert decode_cache_file(blob, key) == (payload, "")
    assert decode_cache_file(blob, "other")[0] is None  # mismatched key
    flipped = bytearray(blob)
    flipped[-3] ^= 0xFF
    assert "checksum" in decode_cache_file(bytes(flipped), key)[1]
    assert decode_cache_file(blob[:-1], key)[0] is None  # truncated payload
    assert decode_cache_file(blob[:10], key)[0] is None  # truncated header
    assert decode_cache_file(b"garbage" * 9, key)[0] is None
    path = tmp_path / "e.engine"
    write_cache_file(path, key, payload)
    assert read_cache_file(path, key) == payload
    assert read_cache_file(tmp_path / "missing.engine", key) is None


def test_corrupt_cache_file_is_rebuilt_with_warning(tmp_path, caplog):
    cache = EngineCache(tmp_path)
    builds = []

    def build():
        builds.append(1)
        return b"engine-%d" % len(builds)

    assert cache.get_or_build(FIELDS, build) == b"engine-1"
    assert cache.get_or_build(FIELDS, build) == b"engine-1"  # reused, not rebuilt
    assert len(builds) == 1 and cache.hits == 1
    path = cache.path(cache_key(FIELDS))
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0x01  # corrupt the payload
    path.write_bytes(bytes(blob))
    with caplog.at_level(logging.WARNING, logger="admn_ros.engine.cache"):
        assert cache.get_or_build(FIELDS, build) == b"engine-2"  # rebuilt, corrupt one unused
    assert "invalid" in caplog.text and "checksum" in caplog.text
    assert len(builds) == 2
    assert read_cache_file(path, cache_key(FIELDS)) == b"engine-2"  # file replaced


requires_trt = pytest.mark.skipif(tensorrt_unavailable_reason() is not None,
                                  reason=tensorrt_unavailable_reason() or "")


@pytest.mark.skipif(tensorrt_unavailable_reason() != NOT_INSTALLED,
                    reason="torch_tensorrt is installed")
def test_tensorrt_selection_fails_at_start_when_not_installed():
    with pytest.raises(EngineStartupError, match=NOT_INSTALLED):
        make_backend("tensorrt", *tiny_modules(), device="cpu")


@requires_trt
def test_tensorrt_matches_eager_and_reuses_cache(tmp_path):
    model, controller = tiny_modules()
    x = tiny_inputs(model.cfg, 2)
    eager = make_backend("eager", model, controller, device="cpu")
    ref = [eager.step(x, b) for b in (3, 6, 9)]
    model, controller = tiny_modules()
    trt = make_backend("tensorrt", model, controller, device="cuda", precision="fp32",
                       cache_dir=tmp_path)
    xc = trt.to_device(x)
    for r in ref:
        out = trt.run(xc, r.mask)
        torch.testing.assert_close(out.mean.cpu(), r.prediction.mean, atol=1e-2, rtol=1e-3)
    assert trt.cache.builds > 0
    model, controller = tiny_modules()
    again = make_backend("tensorrt", model, controller, device="cuda", precision="fp32",
                         cache_dir=tmp_path)
    again.run(xc, ref[0].mask)
    assert again.cache.builds == 0 and again.cache.hits > 0

"""numpy <-> sensor_msgs/Image / CompressedImage conversions."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from admn_ros.data.image_codec import (
    compressed_to_numpy,
    image_to_numpy,
    image_to_rgb,
    numpy_to_compressed_fields,
    numpy_to_image_fields,
)

RNG = np.random.default_rng(0)
ARRAYS = {
    "rgb8": RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8),
    "bgr8": RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8),
    "mono8": RNG.integers(0, 256, (5, 7), dtype=np.uint8),
    "16UC1": RNG.integers(0, 65535, (5, 7), dtype=np.uint16),
    "32FC1": RNG.standard_normal((5, 7)).astype(np.float32),
}


@pytest.mark.parametrize("encoding", sorted(ARRAYS))
def test_image_round_trip(encoding):
    arr = ARRAYS[encoding]
    msg = SimpleNamespace(**numpy_to_image_fields(arr, encoding))
    assert msg.step == arr.shape[1] * arr.itemsize * (3 if arr.ndim == 3 else 1)
    assert np.array_equal(image_to_numpy(msg), arr)


def test_padded_rows_big_endian_and_bgr():
    arr = ARRAYS["16UC1"]
    rows = np.zeros((5, 7 * 2 + 6), np.uint8)
    rows[:, :14] = arr.astype(">u2").view(np.uint8).reshape(5, 14)
    msg = SimpleNamespace(encoding="16UC1", height=5, width=7, step=20, is_bigendian=1,
                          data=bytes(rows))
    assert np.array_equal(image_to_numpy(msg), arr)
    bgr = SimpleNamespace(**numpy_to_image_fields(ARRAYS["bgr8"], "bgr8"))
    assert np.array_equal(image_to_rgb(bgr), ARRAYS["bgr8"][..., ::-1])


def test_bad_images():
    with pytest.raises(ValueError, match="unsupported image encoding"):
        image_to_numpy(SimpleNamespace(encoding="yuv422", height=1, width=1, step=2,
                                       is_bigendian=0, data=b"00"))
    with pytest.raises(ValueError, match="too small"):
        image_to_numpy(SimpleNamespace(encoding="rgb8", height=2, width=2, step=6,
                                       is_bigendian=0, data=b"\0" * 5))
    with pytest.raises(ValueError, match="16UC1 needs uint16"):
        numpy_to_image_fields(np.zeros((2, 2), np.float32), "16UC1")


def test_compressed():
    img = np.zeros((16, 16, 3), np.uint8)
    img[..., 0] = 200
    msg = SimpleNamespace(**numpy_to_compressed_fields(img, "jpeg", 95))
    assert np.abs(compressed_to_numpy(msg).astype(int) - img).max() <= 3
    depth = ARRAYS["16UC1"]
    msg = SimpleNamespace(**numpy_to_compressed_fields(depth, "png"))
    assert np.array_equal(compressed_to_numpy(msg), depth)
    with pytest.raises(ValueError, match="corrupt"):
        compressed_to_numpy(SimpleNamespace(format="jpeg", data=b"garbage"))

"""Sensor messages -> the arrays `Preprocess` expects, with drop reasons for bad input.

cv_bridge is used where it is installed (real ROS); otherwise the data layer's numpy codec
(`admn_ros.data.image_codec`). Problems raise `InputError(reason, text)` so the nodes can
count drops by reason: `bad_encoding`, `bad_size`, `nan_depth`, `nan_radar`, `empty_radar`.
"""

from __future__ import annotations

import numpy as np

from admn_ros.data.image_codec import ENCODINGS, compressed_to_numpy, image_to_numpy

try:  # real ROS install
    from cv_bridge import CvBridge
except ImportError:  # here: the data layer's numpy path
    CvBridge = None

_bridge = CvBridge() if CvBridge is not None else None
USABLE = {"rgb": ("rgb8", "bgr8", "mono8"), "depth": ("16UC1", "mono16", "32FC1"),
          "radar": ("32FC1",)}


class InputError(ValueError):
    """A sensor message the graph cannot use; `reason` is the drop counter's key."""

    def __init__(self, reason: str, text: str) -> None:
        super().__init__(text)
        self.reason = reason


def _to_numpy(msg) -> np.ndarray:
    if _bridge is not None:
        return _bridge.imgmsg_to_cv2(msg, desired_encoding="passthrough")
    return image_to_numpy(msg)


def decode(modality: str, msg) -> np.ndarray:
    """Image or CompressedImage -> rgb uint8 [H, W, 3] RGB | depth uint16 [H, W] mm |
    radar float32 [R, D]."""
    if not hasattr(msg, "encoding"):  # CompressedImage
        try:
            arr = compressed_to_numpy(msg)
        except ValueError as exc:
            raise InputError("bad_encoding", str(exc)) from None
        return _check(modality, arr)
    enc = str(msg.encoding)
    if enc not in USABLE.get(modality, ()) or enc not in ENCODINGS:
        raise InputError("bad_encoding", f"{modality}: encoding {enc!r}, expected one of "
                                         f"{list(USABLE.get(modality, ()))}")
    try:
        arr = _to_numpy(msg)
    except (ValueError, TypeError) as exc:  # cv_bridge's CvBridgeError is a TypeError, and
        raise InputError("bad_size", str(exc)) from None  # so is numpy's short buffer
    if modality == "rgb":
        arr = {"rgb8": arr, "bgr8": arr[..., ::-1],
               "mono8": np.repeat(arr[..., None], 3, axis=-1)}[enc]
    elif modality == "depth" and enc == "32FC1":  # metres (REP 118)
        if not np.isfinite(arr).all():
            raise InputError("nan_depth", "32FC1 depth contains NaN or inf")
        arr = np.clip(arr * 1000.0, 0, 65535).astype(np.uint16)
    return _check(modality, np.ascontiguousarray(arr))


def _check(modality: str, arr: np.ndarray) -> np.ndarray:
    if arr.size == 0:
        raise InputError("empty_radar" if modality == "radar" else "bad_size",
                         f"{modality}: empty frame")
    if modality == "radar":
        if not np.isfinite(arr).all():
            raise InputError("nan_radar", "radar frame contains NaN or inf")
        if not np.any(arr):
            raise InputError("empty_radar", "radar frame is all zeros")
    return arr

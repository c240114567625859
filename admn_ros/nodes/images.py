"""Sensor messages -> the arrays `Preprocess` expects, with drop reasons for bad input.

cv_bridge is used where it is installed (real ROS); otherwise the data layer's numpy codec
(`admn_ros.data.image_codec`). Problems raise `InputError(reason, text)` so the nodes can
count drops by reason: `bad_encoding`, `bad_size`, `nan_depth`, `empty_depth`, `nan_radar`,
`empty_radar`.

Depth follows REP 118: a 32FC1 pixel that is NaN (no reading), -Inf (too close) or +Inf (too
far) and a 16UC1 pixel of 0 all become 0 mm, the value holes have in the training data
(`Preprocess.depth_np`: holes stay 0). The share of such pixels is returned with the frame;
only a frame (almost) all invalid is rejected.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from admn_ros.data.image_codec import ENCODINGS, compressed_to_numpy, image_to_numpy

try:  # real ROS install
    from cv_bridge import CvBridge
except ImportError:  # here: the data layer's numpy path
    CvBridge = None

_bridge = CvBridge() if CvBridge is not None else None
USABLE = {"rgb": ("rgb8", "bgr8", "mono8"), "depth": ("16UC1", "mono16", "32FC1"),
          "radar": ("32FC1",)}
NO_READING_MM = 0  # a depth pixel without a reading, as in the training data


class InputError(ValueError):
    """A sensor message the graph cannot use; `reason` is the drop counter's key."""

    def __init__(self, reason: str, text: str) -> None:
        super().__init__(text)
        self.reason = reason


def drop_reason(exc: BaseException) -> str:
    """The drop counter's key for an exception raised on one frame or job: an InputError's
    reason, else `error_<ExceptionType>`."""
    return exc.reason if isinstance(exc, InputError) else f"error_{type(exc).__name__}"


@dataclass
class Frame:
    """A decoded frame; `invalid_share` = share of depth pixels without a reading (None for
    the other modalities)."""

    array: np.ndarray
    invalid_share: float | None = None


def _to_numpy(msg) -> np.ndarray:
    if _bridge is not None:
        return _bridge.imgmsg_to_cv2(msg, desired_encoding="passthrough")
    return image_to_numpy(msg)


def decode(modality: str, msg, max_invalid_share: float = 1.0) -> Frame:
    """Image or CompressedImage -> rgb uint8 [H, W, 3] RGB | depth uint16 [H, W] mm |
    radar float32 [R, D]. A depth frame whose share of invalid pixels is at least
    `max_invalid_share` is rejected (`nan_depth` for 32FC1, `empty_depth` for 16UC1)."""
    if not hasattr(msg, "encoding"):  # CompressedImage
        try:
            arr = compressed_to_numpy(msg)
        except ValueError as exc:
            raise InputError("bad_encoding", str(exc)) from None
        return _check(modality, arr, "", max_invalid_share)
    enc = str(msg.encoding)
    if enc not in USABLE.get(modality, ()) or enc not in ENCODINGS:
        raise InputError("bad_encoding", f"{modality}: encoding {enc!r}, expected one of "
                                         f"{list(USABLE.get(modality, ()))}")
    if int(msg.height) <= 0 or int(msg.width) <= 0:
        raise InputError("bad_size", f"{modality}: empty {enc} frame "
                                     f"({msg.width}x{msg.height})")
    try:
        arr = _to_numpy(msg)
    except (ValueError, TypeError) as exc:  # step / data length disagree with the size
        # (numpy's short buffer and cv_bridge's CvBridgeError are TypeErrors)
        raise InputError("bad_size", f"{modality}: {exc}") from None
    if modality == "rgb":
        arr = {"rgb8": arr, "bgr8": arr[..., ::-1],
               "mono8": np.repeat(arr[..., None], 3, axis=-1)}[enc]
    elif modality == "depth" and enc == "32FC1":  # metres (REP 118)
        finite = np.isfinite(arr)
        mm = np.where(finite, arr, 0.0) * 1000.0
        arr = np.clip(mm, NO_READING_MM, np.iinfo(np.uint16).max).astype(np.uint16)
    return _check(modality, np.ascontiguousarray(arr), enc, max_invalid_share)


def _check(modality: str, arr: np.ndarray, enc: str, max_invalid_share: float) -> Frame:
    if arr.size == 0:
        raise InputError("empty_radar" if modality == "radar" else "bad_size",
                         f"{modality}: empty frame")
    if modality == "radar":
        if not np.isfinite(arr).all():
            raise InputError("nan_radar", "radar frame contains NaN or inf")
        if not np.any(arr):
            raise InputError("empty_radar", "radar frame is all zeros")
    if modality != "depth":
        return Frame(arr)
    share = float(np.count_nonzero(arr == NO_READING_MM)) / arr.size
    if share >= max_invalid_share:
        raise InputError("nan_depth" if enc == "32FC1" else "empty_depth",
                         f"depth: {share:.1%} of the pixels have no reading (NaN, inf or "
                         f"0; at most {max_invalid_share:.1%} accepted)")
    return Frame(arr, share)

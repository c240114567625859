"""numpy <-> sensor_msgs/Image and CompressedImage, for rosbags and rclpy messages alike.

Readers take any object with ``encoding, height, width, step, data, is_bigendian`` (Image) or
``format, data`` (CompressedImage); writers return plain field dicts that the caller passes to
its own message class (rosbags typestore class or rclpy message).
"""

from __future__ import annotations

import sys

import cv2
import numpy as np

# encoding -> (dtype, channels)
ENCODINGS: dict[str, tuple[type, int]] = {
    "rgb8": (np.uint8, 3),
    "bgr8": (np.uint8, 3),
    "mono8": (np.uint8, 1),
    "8UC1": (np.uint8, 1),
    "mono16": (np.uint16, 1),
    "16UC1": (np.uint16, 1),
    "32FC1": (np.float32, 1),
}


def image_to_numpy(msg: object) -> np.ndarray:
    """Image message -> array [H, W] or [H, W, C] of the encoding's dtype (native byte order).

    Channel order is left as encoded (bgr8 stays BGR); see `image_to_rgb`.
    """
    enc = str(msg.encoding)
    if enc not in ENCODINGS:
        raise ValueError(f"unsupported image encoding {enc!r}; expected one of "
                         f"{sorted(ENCODINGS)}")
    dtype, ch = ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    row = w * ch * np.dtype(dtype).itemsize
    if step < row or buf.size < h * step:
        raise ValueError(f"{enc} image {w}x{h}: step {step} and {buf.size} data bytes are too "
                         f"small (need step >= {row} and {h * step} bytes)")
    rows = buf[:h * step].reshape(h, step)[:, :row]
    big = bool(msg.is_bigendian)
    dt = np.dtype(dtype).newbyteorder(">" if big else "<")
    arr = np.ascontiguousarray(rows).view(dt).reshape((h, w, ch) if ch > 1 else (h, w))
    return arr.astype(np.dtype(dtype).newbyteorder("="), copy=False)


def image_to_rgb(msg: object) -> np.ndarray:
    """Colour or mono Image message -> uint8 [H, W, 3] RGB."""
    arr = image_to_numpy(msg)
    enc = str(msg.encoding)
    if enc == "rgb8":
        return arr
    if enc == "bgr8":
        return np.ascontiguousarray(arr[..., ::-1])
    if enc in ("mono8", "8UC1"):
        return np.repeat(arr[..., None], 3, axis=-1)
    raise ValueError(f"cannot convert {enc!r} to RGB; expected rgb8, bgr8 or mono8")


def numpy_to_image_fields(arr: np.ndarray, encoding: str) -> dict:
    """Array -> Image fields (height, width, encoding, is_bigendian, step, data uint8 array)."""
    if encoding not in ENCODINGS:
        raise ValueError(f"unsupported image encoding {encoding!r}; expected one of "
                         f"{sorted(ENCODINGS)}")
    dtype, ch = ENCODINGS[encoding]
    arr = np.asarray(arr)
    want = (ch,) if ch > 1 else ()
    if arr.dtype != dtype or arr.ndim != 2 + (ch > 1) or arr.shape[2:] != want:
        shape = "[H, W, 3]" if ch > 1 else "[H, W]"
        raise ValueError(f"{encoding} needs {np.dtype(dtype)} {shape}, got {arr.dtype} "
                         f"{list(arr.shape)}")
    arr = np.ascontiguousarray(arr)
    h, w = arr.shape[:2]
    return {"height": h, "width": w, "encoding": encoding,
            "is_bigendian": int(sys.byteorder == "big"),
            "step": w * ch * arr.dtype.itemsize,
            "data": arr.reshape(-1).view(np.uint8)}


def compressed_to_numpy(msg: object) -> np.ndarray:
    """CompressedImage (jpeg or png) -> uint8 RGB [H, W, 3], or [H, W] uint8/uint16 for mono.

    The `format` field may be 'jpeg', 'png' or ROS's 'rgb8; jpeg compressed bgr8' style.
    """
    fmt = str(msg.format).lower()
    if "jpeg" not in fmt and "jpg" not in fmt and "png" not in fmt:
        raise ValueError(f"unsupported CompressedImage format {msg.format!r}; expected jpeg/png")
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    if img is None:
        raise ValueError(f"corrupt {fmt} CompressedImage ({buf.size} bytes)")
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB if img.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    return img


def numpy_to_compressed_fields(arr: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> dict:
    """uint8 RGB [H, W, 3] or mono [H, W] (uint16 only as png) -> CompressedImage fields."""
    arr = np.asarray(arr)
    if fmt not in ("jpeg", "png"):
        raise ValueError(f"format must be 'jpeg' or 'png', got {fmt!r}")
    if arr.dtype == np.uint16 and fmt != "png":
        raise ValueError("16-bit images can only be compressed as png")
    if arr.dtype not in (np.uint8, np.uint16) or arr.ndim not in (2, 3):
        raise ValueError(f"expected uint8/uint16 [H, W] or [H, W, 3], got {arr.dtype} "
                         f"{list(arr.shape)}")
    img = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR) if arr.ndim == 3 else arr
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == "jpeg" else []
    ok, data = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", img, params)
    if not ok:
        raise ValueError(f"cannot encode {arr.dtype} {list(arr.shape)} as {fmt}")
    return {"format": fmt, "data": data.reshape(-1)}

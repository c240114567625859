"""On-disk cache of built engines: backend-independent keys and validated cache files.

A cache entry is one file `<key>.engine`:

    MAGIC (8 bytes) | header length (4 bytes, big endian) | header (JSON) | payload

The header records the key, the key fields (for humans), the payload size and its SHA-256.
`read_cache_file` returns the payload only when every check passes; a missing, truncated,
corrupt or mismatched file gives None and (except "missing") a warning, so the caller rebuilds.
A stale or damaged engine is never used.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

log = logging.getLogger(__name__)

MAGIC = b"ADMNENG1"
HEADER_LEN = struct.Struct(">I")
# A header larger than this is taken as corruption rather than read into memory.
MAX_HEADER_BYTES = 1 << 20
SUFFIX = ".engine"


def weights_hash(state_dict: Mapping[str, Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of every tensor (order-independent)."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def code_version(modules: list[ModuleType]) -> str:
    """SHA-256 (short) of the source files of `modules`: the code an engine was traced from."""
    h = hashlib.sha256()
    for mod in modules:
        h.update(mod.__name__.encode())
        h.update(Path(inspect.getfile(mod)).read_bytes())
    return h.hexdigest()[:16]


def cache_key_fields(weights: str, part: str, part_config: Mapping[str, Any], code: str,
                     shapes: list[tuple[int, ...]], precision: str, gpu_name: str,
                     backend_version: str, dtypes: list[str] | None = None) -> dict[str, Any]:
    """Everything an engine depends on; any change gives a new key: the part's weights and its
    model config (what the weights do not hold: input statistics, head count, pooling), the
    code it was traced from, the input shapes and dtypes, the precision, the GPU and the
    backend's version."""
    return {
        "weights": weights,
        "part": part,
        "part_config": json.loads(json.dumps(part_config, sort_keys=True)),
        "code": code,
        "shapes": [list(s) for s in shapes],
        "dtypes": list(dtypes or []),
        "precision": precision,
        "gpu": gpu_name,
        "backend_version": backend_version,
    }


def cache_key(fields: Mapping[str, Any]) -> str:
    """Stable short key (hex) of `cache_key_fields(...)`."""
    blob = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def encode_cache_file(key: str, payload: bytes, fields: Mapping[str, Any] | None = None) -> bytes:
    header = json.dumps({
        "key": key,
        "fields": dict(fields or {}),
        "size": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
    }, sort_keys=True).encode()
    return MAGIC + HEADER_LEN.pack(len(header)) + header + payload


def decode_cache_file(blob: bytes, key: str) -> tuple[bytes | None, str]:
    """(payload, "") when `blob` is a valid entry for `key`, else (None, reason)."""
    start = len(MAGIC) + HEADER_LEN.size
    if len(blob) < start or not blob.startswith(MAGIC):
        return None, "not an engine cache file (bad magic or truncated)"
    (n,) = HEADER_LEN.unpack(blob[len(MAGIC):start])
    if n > MAX_HEADER_BYTES or start + n > len(blob):
        return None, f"header length {n} does not fit the file ({len(blob)} bytes)"
    try:
        header = json.loads(blob[start:start + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"unreadable header ({exc})"
    if not isinstance(header, dict):
        return None, "unreadable header (not a mapping)"
    if header.get("key") != key:
        return None, f"key mismatch (file {header.get('key')!r}, expected {key!r})"
    payload = blob[start + n:]
    if header.get("size") != len(payload):
        return None, f"payload size {len(payload)} != recorded {header.get('size')}"
    if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        return None, "payload checksum mismatch"
    return payload, ""


def read_cache_file(path: str | Path, key: str) -> bytes | None:
    """The payload of a valid entry; None (with a warning unless the file is absent) otherwise."""
    path = Path(path)
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("engine cache %s unreadable (%s); rebuilding", path, exc)
        return None
    payload, reason = decode_cache_file(blob, key)
    if payload is None:
        log.warning("engine cache %s is invalid: %s; rebuilding, the file is not used",
                    path, reason)
    return payload


def write_cache_file(path: str | Path, key: str, payload: bytes,
                     fields: Mapping[str, Any] | None = None) -> None:
    """Atomic write (temporary file + rename): readers never see half an entry."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(encode_cache_file(key, payload, fields))
    os.replace(tmp, path)


class EngineCache:
    """Directory of cache entries; `get_or_build` reuses a valid entry or rebuilds it."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.hits = 0
        self.builds = 0

    def path(self, key: str) -> Path:
        return self.root / f"{key}{SUFFIX}"

    def get_or_build(self, fields: Mapping[str, Any], build: Callable[[], bytes]) -> bytes:
        key = cache_key(fields)
        payload = read_cache_file(self.path(key), key)
        if payload is not None:
            self.hits += 1
            return payload
        payload = build()
        if not isinstance(payload, bytes | bytearray):
            raise TypeError(f"engine build: expected bytes, got {type(payload).__name__}")
        write_cache_file(self.path(key), key, bytes(payload), fields)
        self.builds += 1
        return bytes(payload)

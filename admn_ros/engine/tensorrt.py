"""TensorRT backend (torch-tensorrt, dynamo IR): one engine per part and input shape, cached on
disk (see `cache.py`) under a key of the part's weights and model config, the engine code's
version, GPU, TensorRT version, precision and shapes, so a restart with a warm cache loads
instead of building.

Precision follows the torch-tensorrt API installed:
- with `use_explicit_typing` (torch-tensorrt >= 2.5; the default, and `enabled_precisions`
  deprecated, in current releases) TensorRT keeps the dtypes of the graph: each part and its
  inputs are cast to the precision, and `use_explicit_typing=True` is passed without
  `enabled_precisions` (the two together raise an AssertionError there);
- without it (older releases, weak typing) the part stays fp32 and `enabled_precisions=
  {precision}` lets the builder pick lower-precision kernels.

Build: `torch_tensorrt.compile(module, ir="dynamo", inputs=[Input(shape, dtype)], ...)`,
`torch_tensorrt.save(gm, path, inputs=...)`; load: `torch.export.load(path).module()`. Any
failure while building or loading an engine is an `EngineStartupError` with one line that
names the part, shapes, precision and versions.
"""

from __future__ import annotations

import importlib.util
import inspect
import io
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from admn_ros.engine.base import PRECISIONS, Engine, EngineStartupError, one_line
from admn_ros.engine.cache import EngineCache, cache_key_fields, code_version, weights_hash
from admn_ros.engine.parts import part_config

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path(os.environ.get("ADMN_ENGINE_CACHE", "~/.cache/admn_ros/engines"))
NOT_INSTALLED = "torch_tensorrt not installed"
# The code a TensorRT engine is traced from: a change in any of these files invalidates it.
ENGINE_CODE_MODULES = (
    "admn_ros.core.vit", "admn_ros.core.fusion", "admn_ros.core.model",
    "admn_ros.core.controller", "admn_ros.engine.parts", "admn_ros.engine.tensorrt",
)


def tensorrt_unavailable_reason() -> str | None:
    if importlib.util.find_spec("torch_tensorrt") is None:
        return NOT_INSTALLED
    if not torch.cuda.is_available():
        return "TensorRT needs a CUDA device, none is available"
    return None


def tensorrt_version() -> str:
    import torch_tensorrt

    try:
        import tensorrt

        return f"trt{tensorrt.__version__}+torch_tensorrt{torch_tensorrt.__version__}"
    except ImportError:
        return f"torch_tensorrt{torch_tensorrt.__version__}"


def explicit_typing_supported() -> bool:
    """Whether the installed torch-tensorrt's dynamo compiler has `use_explicit_typing`."""
    import torch_tensorrt

    return "use_explicit_typing" in inspect.signature(torch_tensorrt.dynamo.compile).parameters


def compile_settings(precision: str, explicit_typing: bool) -> dict[str, Any]:
    """Keyword arguments of `torch_tensorrt.compile` for `precision` (see the module doc)."""
    if explicit_typing:
        return {"use_explicit_typing": True}
    return {"enabled_precisions": {PRECISIONS[precision]}}


def load_engine(payload: bytes) -> Callable:
    """A saved engine (`torch_tensorrt.save` bytes) as a callable module."""
    return torch.export.load(io.BytesIO(payload)).module()


class _EnginePart:
    """One part; one TensorRT engine per distinct input signature, built or loaded lazily."""

    def __init__(self, owner: TensorRTEngine, name: str, module: nn.Module) -> None:
        self.owner, self.name, self.module = owner, name, module
        self._weights: str | None = None
        self.engines: dict[tuple, Callable] = {}

    def __call__(self, *args: Tensor):
        sig = tuple((tuple(a.shape), a.dtype) for a in args)
        fn = self.engines.get(sig)
        if fn is None:
            fn = self.engines[sig] = self._load_or_build(args)
        return fn(*args)

    def key_fields(self, args: tuple[Tensor, ...]) -> dict[str, Any]:
        if self._weights is None:
            self._weights = weights_hash(self.module.state_dict())
        o = self.owner
        return cache_key_fields(self._weights, self.name, part_config(o.cfg, self.name),
                                o.code_version, [tuple(a.shape) for a in args], o.precision,
                                o.gpu_name, o.trt_version, [str(a.dtype) for a in args])

    def _load_or_build(self, args: tuple[Tensor, ...]) -> Callable:
        o = self.owner
        shapes = [tuple(a.shape) for a in args]
        try:
            payload = o.cache.get_or_build(self.key_fields(args), lambda: self._build(args))
            return load_engine(payload)
        except EngineStartupError:
            raise
        except Exception as exc:  # the builder fails in many ways; the node reports one line
            raise EngineStartupError(
                f"backend 'tensorrt': engine for part {self.name} {shapes} ({o.precision}, "
                f"{o.trt_version}, {o.gpu_name}) failed: {one_line(exc)}; use --backend "
                "compile or eager") from exc

    def _build(self, args: tuple[Tensor, ...]) -> bytes:
        import torch_tensorrt

        o = self.owner
        log.info("building TensorRT engine for %s %s", self.name, [tuple(a.shape) for a in args])
        specs = [torch_tensorrt.Input(tuple(a.shape), dtype=a.dtype) for a in args]
        gm = torch_tensorrt.compile(self.module, ir="dynamo", inputs=specs,
                                    **compile_settings(o.precision, o.explicit_typing))
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "part.ep")
            torch_tensorrt.save(gm, path, inputs=list(args))
            return Path(path).read_bytes()


class TensorRTEngine(Engine):
    """Per-part TensorRT engines with an on-disk cache; `precision` fp16 (default), fp32 or
    bf16. With explicit typing the parts and their inputs run in that dtype; outputs are fp32."""

    name = "tensorrt"

    def __init__(self, model, controller=None, device="cuda", precision: str = "fp16",
                 num_threads=None, check_finite=True, overlap: bool = True,
                 cache_dir: str | Path | None = None) -> None:
        reason = tensorrt_unavailable_reason()
        if reason:
            raise EngineStartupError(f"backend 'tensorrt' unavailable: {reason} (install "
                                     "torch-tensorrt matching torch, or use --backend "
                                     "compile/eager)")
        if precision not in PRECISIONS:
            raise ValueError(f"precision: expected one of {list(PRECISIONS)}, got {precision!r}")
        self.gpu_name = self._gpu_name(torch.device(device))
        self.trt_version = tensorrt_version()
        self.explicit_typing = explicit_typing_supported()
        self.code_version = code_version([importlib.import_module(m)
                                          for m in ENGINE_CODE_MODULES])
        self.cache = EngineCache(Path(cache_dir or DEFAULT_CACHE_DIR).expanduser())
        torch_dtype = precision if self.explicit_typing else "fp32"
        super().__init__(model, controller, device, torch_dtype, num_threads, check_finite,
                         overlap)
        self.precision = precision  # what TensorRT runs (with weak typing: kernels it may pick)

    def _gpu_name(self, device: torch.device) -> str:
        """Name of the CUDA device the engines are built for (part of the cache key)."""
        if device.type != "cuda":
            raise ValueError(f"backend 'tensorrt': expected a CUDA device, got {str(device)!r}")
        return torch.cuda.get_device_name(device)

    def _build_part(self, name: str, module: nn.Module) -> Callable:
        return _EnginePart(self, name, module)

    def describe(self) -> dict[str, str]:
        d = super().describe()
        d.update(gpu=self.gpu_name, tensorrt=self.trt_version, cache=str(self.cache.root),
                 typing="explicit" if self.explicit_typing else "weak (enabled_precisions)")
        return d

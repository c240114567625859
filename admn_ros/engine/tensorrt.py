"""TensorRT backend (torch-tensorrt, dynamo IR): one engine per part and input shape, fp16 by
default, cached on disk (see `cache.py`) under a key of part weights + GPU + TensorRT version +
precision + shapes, so a restart with a warm cache loads instead of building.

Follows the documented API: `torch_tensorrt.compile(module, ir="dynamo", inputs=[Input(...)],
enabled_precisions={...})`, `torch_tensorrt.save(gm, path, inputs=...)`, loading with
`torch.export.load(path).module()`. Needs CUDA and torch_tensorrt; otherwise construction fails
with a message saying so.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from admn_ros.engine.base import PRECISIONS, Engine
from admn_ros.engine.cache import EngineCache, cache_key_fields, weights_hash

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path(os.environ.get("ADMN_ENGINE_CACHE", "~/.cache/admn_ros/engines"))
NOT_INSTALLED = "torch_tensorrt not installed"


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

    def _load_or_build(self, args: tuple[Tensor, ...]) -> Callable:
        if self._weights is None:
            self._weights = weights_hash(self.module.state_dict())
        o = self.owner
        fields = cache_key_fields(self._weights, self.name, [tuple(a.shape) for a in args],
                                  o.precision, o.gpu_name, o.trt_version,
                                  [str(a.dtype) for a in args])
        payload = o.cache.get_or_build(fields, lambda: self._build(args))
        return torch.export.load(io.BytesIO(payload)).module()

    def _build(self, args: tuple[Tensor, ...]) -> bytes:
        import torch_tensorrt

        log.info("building TensorRT engine for %s %s", self.name, [tuple(a.shape) for a in args])
        specs = [torch_tensorrt.Input(tuple(a.shape), dtype=a.dtype) for a in args]
        precisions = {PRECISIONS[self.owner.precision]}
        gm = torch_tensorrt.compile(self.module, ir="dynamo", inputs=specs,
                                    enabled_precisions=precisions)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "part.ep")
            torch_tensorrt.save(gm, path, inputs=list(args))
            return Path(path).read_bytes()


class TensorRTEngine(Engine):
    """Per-part TensorRT engines with an on-disk cache. Model weights stay fp32 in torch;
    `precision` selects the kernels TensorRT may use (fp16 default, fp32/bf16 selectable)."""

    name = "tensorrt"

    def __init__(self, model, controller=None, device="cuda", precision: str = "fp16",
                 num_threads=None, check_finite=True,
                 cache_dir: str | Path | None = None) -> None:
        reason = tensorrt_unavailable_reason()
        if reason:
            raise RuntimeError(f"backend 'tensorrt' unavailable: {reason} "
                               "(install torch-tensorrt matching torch, or use --backend "
                               "compile/eager)")
        if torch.device(device).type != "cuda":
            raise ValueError(f"backend 'tensorrt': expected a CUDA device, got {device!r}")
        self.trt_precision = precision
        self.gpu_name = torch.cuda.get_device_name(torch.device(device))
        self.trt_version = tensorrt_version()
        self.cache = EngineCache(Path(cache_dir or DEFAULT_CACHE_DIR).expanduser())
        super().__init__(model, controller, device, "fp32", num_threads, check_finite)
        self.precision = precision  # reported precision: what TensorRT runs

    def _build_part(self, name: str, module: nn.Module) -> Callable:
        return _EnginePart(self, name, module)

    def describe(self) -> dict[str, str]:
        d = super().describe()
        d.update(gpu=self.gpu_name, tensorrt=self.trt_version, cache=str(self.cache.root))
        return d

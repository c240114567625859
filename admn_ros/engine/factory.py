"""`make_backend(name, ...)`: one entry point for the fusion node, `admn eval` and `admn bench`."""

from __future__ import annotations

import torch

from admn_ros.core.controller import Controller
from admn_ros.core.model import ADMN
from admn_ros.engine.base import Engine, EngineStartupError, one_line
from admn_ros.engine.compiled import CompileEngine, compile_unavailable_reason
from admn_ros.engine.tensorrt import TensorRTEngine, tensorrt_unavailable_reason

BACKENDS = ("eager", "compile", "tensorrt", "auto")
DEFAULT_PRECISION = {"tensorrt": "fp16", "compile": "fp32", "eager": "fp32"}


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def backend_unavailable_reason(name: str, device: str | torch.device | None = None) -> str | None:
    """Why backend `name` cannot run here (None when it can)."""
    dev = torch.device(device or default_device())
    if name == "eager":
        return None
    if name == "compile":
        return compile_unavailable_reason(dev)
    if name == "tensorrt":
        return tensorrt_unavailable_reason() or (
            None if dev.type == "cuda" else f"TensorRT needs a CUDA device, got {dev}")
    raise ValueError(f"backend: expected one of {list(BACKENDS)}, got {name!r}")


def available_backends(device: str | torch.device | None = None) -> list[str]:
    """Concrete backends that can run on `device` here, cheapest to set up first."""
    return [b for b in BACKENDS[:-1] if backend_unavailable_reason(b, device) is None]


def resolve_backend(name: str, device: str | torch.device | None = None) -> str:
    """`auto` -> tensorrt if present, else compile on CUDA, else eager."""
    if name not in BACKENDS:
        raise ValueError(f"backend: expected one of {list(BACKENDS)}, got {name!r}")
    if name != "auto":
        return name
    dev = torch.device(device or default_device())
    if dev.type == "cuda":
        if backend_unavailable_reason("tensorrt", dev) is None:
            return "tensorrt"
        if backend_unavailable_reason("compile", dev) is None:
            return "compile"
    return "eager"


def make_backend(name: str, model: ADMN, controller: Controller | None = None,
                 device: str | torch.device | None = None, precision: str | None = None,
                 num_threads: int | None = None, check_finite: bool = True,
                 overlap: bool = True, **backend_options) -> Engine:
    """Build an inference engine. `precision` default: fp16 for TensorRT, else fp32.
    `overlap`: controller concurrent with the mask-independent work (see `Engine`).
    `backend_options`: extra keyword arguments of the backend (tensorrt: `cache_dir`;
    compile: `compiler`)."""
    device = device or default_device()
    name = resolve_backend(name, device)
    common = dict(device=device, num_threads=num_threads, check_finite=check_finite,
                  overlap=overlap)
    classes = {"tensorrt": TensorRTEngine, "compile": CompileEngine, "eager": Engine}
    if name == "eager" and backend_options:
        raise ValueError(f"backend {name!r}: unexpected options {sorted(backend_options)}")
    try:
        return classes[name](model, controller, precision=precision or DEFAULT_PRECISION[name],
                             **common, **backend_options)
    except (ValueError, TypeError, EngineStartupError):  # bad arguments / already one line
        raise
    except Exception as exc:  # e.g. out of device memory moving the model: one line too
        raise EngineStartupError(f"backend {name!r} on {device} failed at start-up: "
                                 f"{one_line(exc)}") from exc

"""Inference backends (eager, compile, tensorrt, auto), sub-batching by allocation, benchmarks.

    engine = make_backend("auto", model, controller, device="cpu")
    engine.warmup()
    result = engine.step(inputs, budget=6)   # prediction, mask, noise, timings (ms)
    pred = engine.run(inputs, active)        # backbones + fusion for a given allocation
    mask = engine.allocate(lowres, budget)   # controller only
"""

from admn_ros.engine.base import (
    PRECISIONS,
    Engine,
    EngineOutOfMemoryError,
    EngineStartupError,
    StepResult,
)
from admn_ros.engine.factory import (
    BACKENDS,
    available_backends,
    backend_unavailable_reason,
    make_backend,
    resolve_backend,
)

__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "Engine",
    "EngineOutOfMemoryError",
    "EngineStartupError",
    "StepResult",
    "available_backends",
    "backend_unavailable_reason",
    "make_backend",
    "resolve_backend",
]

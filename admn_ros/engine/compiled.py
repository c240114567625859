"""torch.compile backend: each part compiled on its own with static shapes; on CUDA with
CUDA graphs ("reduce-overhead"). Where compilation is unsupported (no C++ compiler on CPU, a
failing graph), the part falls back to eager with a warning that says why.

CUDA graphs belong to the thread that captured them (torch's cudagraph trees keep per-thread
state; replaying on another thread fails, pytorch/pytorch#123177). With CUDA graphs the engine
therefore owns one thread that runs every `warmup`, `step`, `run` and `allocate`, whichever
thread calls them: a node may warm up in its constructor and run on a worker thread."""

from __future__ import annotations

import collections
import logging
import os
import shutil
import threading
from collections.abc import Callable

import torch
from torch import nn

from admn_ros.engine.base import Engine, one_line

log = logging.getLogger(__name__)

CUDAGRAPH_TLS = ("tree_manager_containers", "tree_manager_locks")


def prepare_cudagraph_thread() -> None:
    """Give the calling thread its own CUDA-graph tree state. Inductor keeps that state in a
    `threading.local` that torch up to 2.11 fills only in the thread that imported
    `cudagraph_trees` (and in autograd's threads): the first engine's thread did, a second
    engine's new thread failed every capture with a bare AssertionError and fell back to
    eager (seen on an H100 and an H200, torch 2.11). Newer torch fills it lazily; filling it
    here serves both."""
    from torch._inductor import cudagraph_trees

    local = cudagraph_trees.local
    if all(hasattr(local, key) for key in CUDAGRAPH_TLS):
        return
    local.tree_manager_containers = {}  # one tree manager per device
    local.tree_manager_locks = collections.defaultdict(threading.Lock)


# Dynamo keeps one compiled graph per (code, guards); every block shares Block.forward, and
# sub-batching adds one shape per distinct sub-batch size, so allow more than the default.
RECOMPILE_LIMIT = 64


def compile_unavailable_reason(device: torch.device) -> str | None:
    """Why torch.compile cannot work here, or None."""
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    if device.type == "cpu":
        cxx = os.environ.get("CXX", "g++")
        if shutil.which(cxx) is None and shutil.which("c++") is None:
            return f"torch.compile on CPU needs a C++ compiler ({cxx!r} not found on PATH)"
    return None


class _CompiledPart:
    """Compiled callable that falls back to the eager module if compilation fails."""

    def __init__(self, name: str, module: nn.Module, mode: str | None,
                 compiler: str | Callable) -> None:
        self.name, self.module = name, module
        self.fn: Callable = torch.compile(module, dynamic=False, fullgraph=True, mode=mode,
                                          backend=compiler)
        self.failed = False

    def __call__(self, *args):
        if self.failed:
            return self.module(*args)
        try:
            return self.fn(*args)
        except Exception as exc:  # compiler errors come in many types; the part still runs
            log.warning("torch.compile of part %s failed (%s); running it eagerly",
                        self.name, one_line(exc))
            log.debug("torch.compile of part %s failed", self.name, exc_info=exc)
            self.failed = True
            return self.module(*args)


class CompileEngine(Engine):
    """Per-part torch.compile (static shapes), CUDA graphs on GPU.

    `compiler`: the torch.compile backend ("inductor"; "eager" traces with dynamo only, which
    tests use to exercise the wiring without minutes of C++ compilation)."""

    name = "compile"

    def __init__(self, model, controller=None, device: str | torch.device = "cpu",
                 precision: str = "fp32", num_threads: int | None = None,
                 check_finite: bool = True, overlap: bool = True,
                 compiler: str = "inductor") -> None:
        dev = torch.device(device)
        self.compiler = compiler
        self.unavailable = compile_unavailable_reason(dev) if compiler == "inductor" else None
        if self.unavailable:
            log.warning("backend 'compile': %s; falling back to eager", self.unavailable)
        self.mode = "reduce-overhead" if dev.type == "cuda" and compiler == "inductor" else None
        limit = getattr(torch._dynamo.config, "recompile_limit", None)
        if limit is not None and limit < RECOMPILE_LIMIT:
            torch._dynamo.config.recompile_limit = RECOMPILE_LIMIT
        if getattr(torch._dynamo.config, "cache_size_limit", RECOMPILE_LIMIT) < RECOMPILE_LIMIT:
            torch._dynamo.config.cache_size_limit = RECOMPILE_LIMIT
        self.compiled_parts: list[_CompiledPart] = []
        super().__init__(model, controller, device, precision, num_threads, check_finite,
                         overlap)
        if self.mode == "reduce-overhead":  # capture and replay on one thread (module doc)
            self._pin_thread()

    def _build_part(self, name: str, module: nn.Module) -> Callable:
        if self.unavailable:
            return module
        part = _CompiledPart(name, module, self.mode, self.compiler)
        self.compiled_parts.append(part)
        return part

    def _setup_pinned_thread(self) -> None:  # the engine pins a thread only for CUDA graphs
        prepare_cudagraph_thread()

    def _begin_run(self) -> None:
        if self.mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()

    def describe(self) -> dict[str, str]:
        d = super().describe()
        d["mode"] = "eager fallback: " + self.unavailable if self.unavailable else \
            (self.mode or "default")
        failed = [p.name for p in self.compiled_parts if p.failed]
        if failed:
            d["eager_fallback_parts"] = ", ".join(failed)
        return d

"""The inference engine: one interface for every backend.

`Engine` (the eager backend) runs the model as a chain of parts (see `parts.py`): per modality
a stem, the active blocks and a head, then fusion; the controller is one more part. Subclasses
only change how a part is turned into something callable (`_build_part`): torch.compile,
TensorRT engines, ...

Batch > 1 is sub-batched by allocation: block (m, i) runs once, on exactly the samples whose
mask has it on (gather, run, scatter). Samples never see each other, so the result equals
running every sample alone.

`step` keeps the controller off the critical path on CPU: it runs on a second thread (its
downsampling inside its graph) while the calling thread runs what every allocation needs
anyway, the stem and the first `min_blocks` blocks of each modality (default: block 0; none
with `min_blocks` 0); the rest of the blocks follow its mask.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from admn_ros.core.controller import Controller, check_budget, forced_slots, gumbel_top_l
from admn_ros.core.model import ADMN, GaussianPrediction, check_forced, downsample
from admn_ros.core.policies import make_policy
from admn_ros.engine.parts import ControllerPart, FusionPart, HeadPart, StemPart
from admn_ros.engine.timing import now_ms

log = logging.getLogger(__name__)

PRECISIONS: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}
# Policy used by `allocate` / `step` when the engine has no learned controller.
FALLBACK_POLICY = "naive"
# Thread-name prefixes of the engine's own threads.
PINNED_THREAD = "admn-engine"
CONTROLLER_THREAD = "admn-controller"


@contextmanager
def _without_onednn() -> Iterator[None]:
    """Process-wide switch to the native CPU kernels for the duration of the block
    (`torch.backends.mkldnn.flags` would also touch the TF32 flag and warn on every call)."""
    previous = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = previous


class EngineOutOfMemoryError(RuntimeError):
    """The device ran out of memory; the message names the batch and the input shapes."""


class EngineStartupError(RuntimeError):
    """The backend could not be built, loaded or warmed up; the message is one line that
    names the backend and the cause (the original exception is chained)."""


def one_line(exc: BaseException) -> str:
    """`Type: first line of the message` (at most 300 characters of it)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:300] if lines else ''}"


def on_engine_thread(method: Callable) -> Callable:
    """Run a public method on the engine's own thread when it has one (`Engine.pinned`), so
    state that lives in one thread (CUDA graphs) is captured and replayed on that thread."""

    @functools.wraps(method)
    def wrapper(self: Engine, *args, **kwargs):
        pool = self._pinned_pool
        if pool is None or threading.get_ident() == self._pinned_ident:
            return method(self, *args, **kwargs)
        return pool.submit(method, self, *args, **kwargs).result()

    return wrapper


@dataclass
class StepResult:
    """Output of `Engine.step`: the prediction (fp32), the allocation, the controller's noise
    estimate and the wall-clock time of each part in milliseconds (device-synchronised)."""

    prediction: GaussianPrediction
    mask: Tensor  # [B, M, D] bool, CPU
    noise: Tensor | None  # [B, M] fp32 (None without a noise head / learned controller)
    timings: dict[str, float] = field(default_factory=dict)  # controller/backbone/fusion/step_ms


def parse_device(device: str | torch.device) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device: expected an available device, got {device!r} "
                             "(CUDA is not available here; use 'cpu')")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    elif dev.type != "cpu":
        raise ValueError(f"device: expected 'cpu' or 'cuda[:N]', got {device!r}")
    return dev


def check_precision(precision: str, device: torch.device) -> torch.dtype:
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {list(PRECISIONS)}, got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision 'fp16': expected a CUDA device (CPU fp16 kernels are slow "
                         f"or missing), got {device}; use 'fp32' or 'bf16'")
    return PRECISIONS[precision]


class Engine:
    """Eager backend, and the base every backend shares.

    Args:
        model: an ADMN; it is moved to `device`/`precision` in place and put in eval mode.
        controller: a trained Controller, or None (allocation by the `naive` policy).
        device: "cpu" or "cuda[:N]".
        precision: "fp32", "fp16" (CUDA only) or "bf16". Outputs are always fp32.
        num_threads: if set, `torch.set_num_threads` (process-wide) for CPU inference.
        check_finite: also reject NaN/inf inputs (one cheap pass over the inputs).
        overlap: in `step` on CPU, run the controller on a second thread while the work that
            does not depend on its mask (patch embeddings and each modality's first
            `min_blocks` blocks, default block 0) runs on the calling one; False: one after
            the other (the reference path).
    """

    name = "eager"

    def __init__(self, model: ADMN, controller: Controller | None = None,
                 device: str | torch.device = "cpu", precision: str = "fp32",
                 num_threads: int | None = None, check_finite: bool = True,
                 overlap: bool = True) -> None:
        if not isinstance(model, ADMN):
            raise ValueError(f"model: expected an ADMN, got {type(model).__name__}")
        if controller is not None and not isinstance(controller, Controller):
            raise ValueError(f"controller: expected a Controller or None, "
                             f"got {type(controller).__name__}")
        if controller is not None and controller.cfg.modalities != model.cfg.modalities:
            raise ValueError(f"controller: expected modalities {model.cfg.modalities}, "
                             f"got {controller.cfg.modalities}")
        if controller is not None and any(
                c < k for c, k in zip(controller.cfg.min_blocks_list, model.cfg.min_blocks_list,
                                      strict=True)):
            raise ValueError(f"controller: expected min_blocks >= the model's "
                             f"{model.cfg.min_blocks_list} (its masks must keep the model's "
                             f"forced blocks), got {controller.cfg.min_blocks_list}")
        self.device = parse_device(device)
        self.precision = precision
        self.dtype = check_precision(precision, self.device)
        if num_threads is not None:
            if num_threads < 1:
                raise ValueError(f"num_threads: expected >= 1, got {num_threads}")
            torch.set_num_threads(num_threads)
        self.check_finite = check_finite
        self.overlap = overlap
        self._pinned_pool: ThreadPoolExecutor | None = None  # see `on_engine_thread`
        self._pinned_ident: int | None = None
        self._controller_pool: ThreadPoolExecutor | None = None
        self.cfg = model.cfg
        self.modalities = list(self.cfg.modalities)
        self.num_nodes, self.depth = self.cfg.num_nodes, self.cfg.depth
        self.img_size = self.cfg.backbone.img_size
        self.model = self._prepare_module(model)
        self.controller = None if controller is None else self._prepare_module(controller)
        self.policy = None if controller is not None else make_policy(FALLBACK_POLICY, self.cfg)
        if controller is None:
            self.budget_range = self.policy.budget_range
        else:  # what the controller accepts and the network can run (each may force blocks)
            (c_lo, c_hi), (n_lo, n_hi) = controller.cfg.budget_range, self.cfg.network_budget_range
            self.budget_range = (max(c_lo, n_lo), min(c_hi, n_hi))
        self.min_blocks = self.cfg.min_blocks_list  # per modality: the blocks that always run
        # the controller's own forced slots, so `_select` picks what `Controller.forward` does
        self._forced = None if controller is None else forced_slots(
            self.cfg.num_modalities, self.depth, self.device, controller.cfg.min_blocks_list)
        self.startup_s: float | None = None
        self._t_created = time.perf_counter()
        # --- parts, each turned callable by the backend ---
        self.stems: dict[str, Callable] = {}
        self.blocks: dict[str, list[Callable]] = {}
        self.heads: dict[str, Callable] = {}
        for m in self.modalities:
            vit = self.model.backbones[m]
            self.stems[m] = self._build_part(f"stem.{m}", StemPart(vit))
            self.blocks[m] = [self._build_part(f"block.{m}.{i}", blk)
                              for i, blk in enumerate(vit.blocks)]
            self.heads[m] = self._build_part(f"head.{m}", HeadPart(vit))
        self.fusion = self._build_part("fusion", FusionPart(self.model))
        # the controller on full-size inputs (downsampling in its graph, for `step`) and on
        # inputs already at its size (`allocate`)
        self.controller_net = self.controller_lowres_net = None
        if self.controller is not None:
            self.controller_net = self._build_part(
                "controller", ControllerPart(self.controller, self.img_size))
            self.controller_lowres_net = self._build_part(
                "controller.lowres", ControllerPart(self.controller))

    # ---------------------------------------------------------------- backend hooks
    def _prepare_module(self, module: nn.Module) -> nn.Module:
        module = module.to(self.device, self.dtype).eval()
        module.requires_grad_(False)
        return module

    def _build_part(self, name: str, module: nn.Module) -> Callable:
        """Backend hook: a callable equivalent to `module` (eager: the module itself)."""
        return module

    def _pin_thread(self) -> None:
        """From now on run every public method on one thread of the engine's own."""

        def remember() -> None:
            self._pinned_ident = threading.get_ident()
            self._setup_pinned_thread()

        self._pinned_pool = ThreadPoolExecutor(1, PINNED_THREAD, initializer=remember)

    def _setup_pinned_thread(self) -> None:
        """Backend hook run once on the engine's own thread when it starts."""

    def _begin_run(self) -> None:
        """Backend hook called once before each run (e.g. CUDA-graph step marking)."""

    def _controller_context(self) -> AbstractContextManager:
        """On CPU the controller's tiny convolutions (a few 3x3 kernels on 32 px inputs) run
        ~1.5x faster on the native kernels than through oneDNN, whose per-call set-up
        dominates at this size (measured on the demo model: 1.2 -> 0.8 ms)."""
        return _without_onednn() if self.device.type == "cpu" else nullcontext()

    # ---------------------------------------------------------------- validation
    def check_inputs(self, inputs: dict[str, Tensor], img_size: int | None = None) -> int:
        """Validate `{modality: [B, S, C, s, s] float32}` on the engine's device; return B."""
        size = self.img_size if img_size is None else img_size
        if not isinstance(inputs, dict) or set(inputs) != set(self.modalities):
            got = sorted(inputs) if isinstance(inputs, dict) else type(inputs).__name__
            raise ValueError(f"inputs: expected keys {self.modalities}, got {got}")
        batch = None
        for m in self.modalities:
            x, c = inputs[m], self.cfg.in_chans[m]
            want = f"[B, {self.num_nodes}, {c}, {size}, {size}]"
            if not isinstance(x, Tensor) or x.dim() != 5 \
                    or tuple(x.shape[1:]) != (self.num_nodes, c, size, size):
                got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
                raise ValueError(f"inputs[{m!r}]: expected {want}, got {got}")
            if x.dtype not in (torch.float32, self.dtype):
                raise ValueError(f"inputs[{m!r}]: expected dtype float32 in [0, 1], "
                                 f"got {x.dtype}")
            if x.device != self.device:
                raise ValueError(f"inputs[{m!r}]: expected device {self.device}, got "
                                 f"{x.device} (move them with engine.to_device(inputs))")
            if batch is not None and x.shape[0] != batch:
                raise ValueError(f"inputs[{m!r}]: expected batch size {batch}, got {x.shape[0]}")
            batch = x.shape[0]
            if batch == 0:
                raise ValueError(f"inputs[{m!r}]: expected batch size >= 1, got 0")
            if self.check_finite and not bool(torch.isfinite(x).all()):
                raise ValueError(f"inputs[{m!r}]: expected finite values, got NaN or inf")
        return batch

    def check_active(self, active: Tensor, batch: int) -> Tensor:
        """Validate a bool mask [M, D] or [B, M, D]; return it as bool [B, M, D] on the CPU."""
        m, d = self.cfg.num_modalities, self.depth
        if not isinstance(active, Tensor) or active.dim() not in (2, 3) \
                or tuple(active.shape[-2:]) != (m, d):
            got = tuple(active.shape) if isinstance(active, Tensor) else type(active).__name__
            raise ValueError(f"active: expected bool [{m}, {d}] or [B, {m}, {d}] "
                             f"(modalities {self.modalities} x {d} blocks), got {got}")
        if active.dtype != torch.bool:
            raise ValueError(f"active: expected dtype bool, got {active.dtype}")
        active = active.to("cpu")
        if active.dim() == 2:
            active = active.expand(batch, m, d)
        elif active.shape[0] != batch:
            raise ValueError(f"active: expected batch size {batch}, got {active.shape[0]}")
        check_forced(active, self.cfg)
        return active

    def to_device(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """Inputs moved to the engine's device (non-blocking from pinned memory)."""
        return {m: x.to(self.device, non_blocking=True) for m, x in inputs.items()}

    # ---------------------------------------------------------------- parts of a step
    def _oom(self, exc: BaseException, inputs: dict[str, Tensor]) -> EngineOutOfMemoryError:
        shapes = {m: tuple(x.shape) for m, x in inputs.items()}
        b = next(iter(shapes.values()))[0]
        return EngineOutOfMemoryError(
            f"out of {self.device} memory in backend {self.name!r} ({self.precision}) with "
            f"batch {b} and input shapes {shapes}; use a smaller batch or a lower precision")

    def _budget(self, budget: int | Tensor, batch: int) -> int | Tensor:
        """Validated budget: a long tensor [B] on the device (the fallback policy checks its
        own)."""
        if self.controller_net is None:
            return budget
        return check_budget(budget, batch, *self.budget_range).to(self.device)

    def _select(self, logits: Tensor, noise: Tensor, budget: Tensor,
                batch: int) -> tuple[Tensor, Tensor | None]:
        """Deterministic top-L of the controller's logits -> mask bool [B, M, D] (CPU)."""
        c = self.cfg.controller
        hard = gumbel_top_l(logits.float(), budget, self._forced, c.gumbel_tau, sample=False)
        mask = hard.view(batch, self.cfg.num_modalities, self.depth).to("cpu") > 0.5
        return mask, (noise.float() if noise.shape[1] else None)

    def _allocate(self, lowres: dict[str, Tensor], budget: int | Tensor,
                  batch: int) -> tuple[Tensor, Tensor | None]:
        """Allocation from inputs already at the controller's size."""
        if self.controller_net is None:
            return self.policy(lowres, budget), None
        b = self._budget(budget, batch)
        with self._controller_context():
            logits, noise = self.controller_lowres_net(*(lowres[m] for m in self.modalities), b)
        return self._select(logits, noise, b, batch)

    def _decide(self, xs: list[Tensor], budget: int | Tensor, batch: int,
                alone: bool = True) -> tuple[Tensor, Tensor | None]:
        """Allocation from full-size inputs (per modality, in `self.modalities` order).
        `alone`: nothing else runs meanwhile, so `_controller_context` may switch kernels
        process-wide (it would slow the patch embeddings running beside it)."""
        if self.controller_net is None:
            size = self.cfg.controller.img_size
            return self.policy(downsample(dict(zip(self.modalities, xs, strict=True)), size),
                               budget), None
        with self._controller_context() if alone else nullcontext():
            logits, noise = self.controller_net(*xs, budget)
        return self._select(logits, noise, budget, batch)

    def _decide_timed(self, xs: list[Tensor], budget: Tensor,
                      batch: int) -> tuple[tuple[Tensor, Tensor | None], float]:
        """`_decide` on the controller thread (grad mode is per thread), and its time in ms."""
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self._decide(xs, budget, batch, alone=False)
        return out, (time.perf_counter() - t0) * 1e3

    def _controller_worker(self) -> ThreadPoolExecutor:
        """The controller's thread, created on first use with the caller's torch threads."""
        if self._controller_pool is None:
            self._controller_pool = ThreadPoolExecutor(
                1, CONTROLLER_THREAD, initializer=torch.set_num_threads,
                initargs=(torch.get_num_threads(),))
        return self._controller_pool

    def _embed(self, xs: list[Tensor]) -> list[Tensor]:
        """The mask-independent start of every backbone: the stem and the first `min_blocks`
        blocks (always active; just the stem with 0), per modality on all B*S views at once
        -> tokens [B*S, T, E]."""
        tokens = []
        for m, k, x in zip(self.modalities, self.min_blocks, xs, strict=True):
            t = self.stems[m](x.flatten(0, 1))
            for block in self.blocks[m][:k]:
                t = block(t)
            tokens.append(t)
        return tokens

    def _encode(self, tokens: list[Tensor], active: Tensor) -> list[Tensor]:
        """The blocks after the first `min_blocks` and the heads on the tokens of `_embed`
        -> features [B, S, E] per modality; `active` bool [B, M, D] on the CPU."""
        feats = []
        batch, s = active.shape[0], self.num_nodes
        rows = active.tolist()  # one host-side plan, no per-block device syncs
        for j, (m, first, x) in enumerate(zip(self.modalities, self.min_blocks, tokens,
                                              strict=True)):
            for i, block in enumerate(self.blocks[m][first:], first):
                on = [k for k in range(batch) if rows[k][j][i]]
                if len(on) == batch:
                    x = block(x)
                elif on:  # sub-batch: gather the views of the active samples, run, scatter
                    idx = torch.tensor([k * s + v for k in on for v in range(s)],
                                       device=self.device)
                    x = x.index_copy(0, idx, block(x.index_select(0, idx)))
            feats.append(self.heads[m](x).unflatten(0, (batch, s)))  # [B, S, E]
        return feats

    def _fuse(self, feats: list[Tensor]) -> GaussianPrediction:
        mean, tril = self.fusion(*feats)
        return GaussianPrediction(mean.float(), tril.float())

    # ---------------------------------------------------------------- public API
    @on_engine_thread
    @torch.inference_mode()
    def allocate(self, lowres: dict[str, Tensor], budget: int | Tensor) -> Tensor:
        """Controller (or fallback policy) on low-res inputs -> mask bool [B, M, D] (CPU)."""
        batch = self.check_inputs(lowres, self.cfg.controller.img_size)
        self._begin_run()
        lowres = {m: x.to(self.dtype) for m, x in lowres.items()}
        return self._allocate(lowres, budget, batch)[0]

    @on_engine_thread
    @torch.inference_mode()
    def run(self, inputs: dict[str, Tensor], active: Tensor) -> GaussianPrediction:
        """Backbones (only active blocks) + fusion -> GaussianPrediction (fp32)."""
        batch = self.check_inputs(inputs)
        active = self.check_active(active, batch)
        self._begin_run()
        try:
            xs = [inputs[m].to(self.dtype) for m in self.modalities]
            return self._fuse(self._encode(self._embed(xs), active))
        except torch.OutOfMemoryError as exc:
            raise self._oom(exc, inputs) from exc

    @on_engine_thread
    @torch.inference_mode()
    def step(self, inputs: dict[str, Tensor], budget: int | Tensor) -> StepResult:
        """Controller (downsampling included) -> backbones -> fusion, with per-part timings
        (ms). With `overlap` on CPU the controller runs on its own thread meanwhile the
        stems and the first `min_blocks` blocks run here; `controller_ms` is then the wait for
        its mask (its share of the critical path) and `controller_total_ms` its own run time."""
        batch = self.check_inputs(inputs)
        budget = self._budget(budget, batch)
        self._begin_run()
        threaded = self.overlap and self.device.type == "cpu" and self.controller_net is not None
        try:
            t0 = now_ms(self.device)
            xs = [inputs[m].to(self.dtype) for m in self.modalities]
            if threaded:
                pending: Future = self._controller_worker().submit(
                    self._decide_timed, xs, budget, batch)
                tokens = self._embed(xs)
                t1 = now_ms(self.device)
                (mask, noise), total = pending.result()
                t2 = now_ms(self.device)
                controller, backbone = t2 - t1, t1 - t0
            else:
                mask, noise = self._decide(xs, budget, batch)
                t1 = now_ms(self.device)
                tokens = self._embed(xs)
                t2 = now_ms(self.device)
                controller = total = t1 - t0
                backbone = t2 - t1
            feats = self._encode(tokens, mask)
            t3 = now_ms(self.device)
            pred = self._fuse(feats)
            t4 = now_ms(self.device)
        except torch.OutOfMemoryError as exc:
            raise self._oom(exc, inputs) from exc
        timings = {"controller_ms": controller, "controller_total_ms": total,
                   "backbone_ms": backbone + t3 - t2, "fusion_ms": t4 - t3, "step_ms": t4 - t0}
        return StepResult(pred, mask, noise, timings)

    def example_inputs(self, batch: int = 1, seed: int = 0) -> dict[str, Tensor]:
        """Random inputs in [0, 1] of the right shapes on the engine's device."""
        g = torch.Generator().manual_seed(seed)
        s, size = self.num_nodes, self.img_size
        return {m: torch.rand(batch, s, self.cfg.in_chans[m], size, size, generator=g)
                .to(self.device) for m in self.modalities}

    @on_engine_thread
    def warmup(self, batch: int = 1, budgets: list[int] | None = None, repeats: int = 2) -> float:
        """Run `step` at every budget in `budgets` (default: min and max) so lazy compilation,
        engine loading and allocator growth happen now; records and returns `startup_s`
        (seconds from construction to the end of the warm-up). A failure other than bad
        arguments is an `EngineStartupError` with a one-line message."""
        lo, hi = self.budget_range
        inputs = self.example_inputs(batch)
        try:
            for _ in range(repeats):
                for budget in budgets or sorted({lo, hi}):
                    self.step(inputs, budget)
        except (ValueError, EngineStartupError, EngineOutOfMemoryError):
            raise
        except Exception as exc:  # backends fail in many ways; callers report one line
            raise EngineStartupError(f"backend {self.name!r} ({self.precision}, {self.device}) "
                                     f"failed at warm-up: {one_line(exc)}") from exc
        self.startup_s = time.perf_counter() - self._t_created
        return self.startup_s

    def describe(self) -> dict[str, str]:
        return {"backend": self.name, "device": str(self.device), "precision": self.precision}

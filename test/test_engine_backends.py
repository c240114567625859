"""Engine: eager equals the core model, sub-batching equals per-sample runs, block execution
follows the allocation, bad input is rejected with ValueError."""

from __future__ import annotations

import copy
import threading
from pathlib import Path

import pytest
import torch
from test_engine_fixtures import masks, tiny_inputs, tiny_modules

from admn_ros.core.model import downsample
from admn_ros.engine import (
    EngineOutOfMemoryError,
    EngineStartupError,
    available_backends,
    backend_unavailable_reason,
    make_backend,
    resolve_backend,
)
from admn_ros.engine.base import CONTROLLER_THREAD

TOL = {"atol": 1e-4, "rtol": 1e-4}
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup():
    model, controller = tiny_modules()
    engine = make_backend("eager", model, controller, device="cpu")
    return model, controller, engine


def allocations(cfg):
    full = torch.ones(cfg.num_modalities, cfg.depth, dtype=torch.bool)
    minimal = torch.zeros_like(full)
    minimal[:, 0] = True
    skewed = minimal.clone()
    skewed[0] = True
    return [full, minimal, skewed, masks(cfg, 1, seed=3)[0]]


def assert_pred_close(a, b, **tol):
    torch.testing.assert_close(a.mean, b.mean, **(tol or TOL))
    torch.testing.assert_close(a.scale_tril, b.scale_tril, **(tol or TOL))


def test_eager_matches_core_model_for_several_allocations(setup):
    model, _, engine = setup
    x = tiny_inputs(model.cfg, 2)
    for active in allocations(model.cfg):
        with torch.no_grad():
            ref = model(x, active)
        assert_pred_close(engine.run(x, active), ref)


def test_step_matches_controller_and_model(setup):
    model, controller, engine = setup
    x = tiny_inputs(model.cfg, 3, seed=1)
    for budget in (3, 5, 9):
        res = engine.step(x, budget)
        with torch.no_grad():
            out = controller(downsample(x, model.cfg.controller.img_size), budget, sample=False)
            ref = model(x, res.mask)
        assert torch.equal(res.mask, out.mask.bool())
        assert res.mask.sum((1, 2)).tolist() == [budget] * 3
        torch.testing.assert_close(res.noise, out.noise, **TOL)
        assert_pred_close(res.prediction, ref)
        assert set(res.timings) == {"controller_ms", "controller_total_ms", "backbone_ms",
                                    "fusion_ms", "step_ms"}
        assert all(v >= 0 for v in res.timings.values())
    assert torch.equal(engine.allocate(downsample(x, 8), 5), engine.step(x, 5).mask)


def test_overlapped_step_equals_plain_eager_path():
    """Controller on its own thread + stems/blocks 0 meanwhile, downsampling inside the
    controller's graph: same masks, noise and predictions as the plain sequential path and
    the core modules, for several budgets and batches."""
    model, controller = tiny_modules()
    overlapped = make_backend("eager", model, controller, device="cpu", overlap=True)
    plain = make_backend("eager", *tiny_modules(), device="cpu", overlap=False)
    threads = set()
    controller.register_forward_pre_hook(lambda *_: threads.add(threading.current_thread().name))
    controller.blocks[0].register_forward_pre_hook(
        lambda *_: threads.add(threading.current_thread().name))
    for batch, seed in ((1, 6), (3, 7)):
        x = tiny_inputs(model.cfg, batch, seed=seed)
        for budget in range(3, model.cfg.total_blocks + 1, 2):
            a, b = overlapped.step(x, budget), plain.step(x, budget)
            assert torch.equal(a.mask, b.mask)
            torch.testing.assert_close(a.noise, b.noise, **TOL)
            assert_pred_close(a.prediction, b.prediction)
            with torch.no_grad():
                ref = model(x, a.mask)
            assert_pred_close(a.prediction, ref)
            assert a.timings["controller_ms"] <= a.timings["step_ms"]
    assert threads == {f"{CONTROLLER_THREAD}_0"}  # the controller ran on its own thread


def test_controller_part_downsampling_equals_core_downsample():
    """Integer factor: average pool in the graph; other sizes: area interpolation."""
    from admn_ros.engine.parts import ControllerPart

    _, controller = tiny_modules()
    cfg = controller.cfg
    budget = torch.full((2,), 5)
    for size in (16, 12):  # 16 / 8 = 2: pooled; 12 / 8: interpolated
        x = {m: torch.rand(2, cfg.num_nodes, cfg.in_chans[m], size, size) for m in cfg.modalities}
        part = ControllerPart(controller, downsample_from=size)
        with torch.no_grad():
            logits, noise = part(*(x[m] for m in cfg.modalities), budget)
            ref, ref_noise, _ = controller.logits_and_noise(downsample(x, 8), budget)
        torch.testing.assert_close(logits, ref, **TOL)
        torch.testing.assert_close(noise, ref_noise.mean(1), **TOL)


def test_subbatching_equals_per_sample(setup):
    model, _, engine = setup
    batch = 5
    x, active = tiny_inputs(model.cfg, batch, seed=2), masks(model.cfg, batch, seed=4)
    active[1] = active[0]  # two samples share a mask, the rest differ
    pred = engine.run(x, active)
    for k in range(batch):
        one = engine.run({m: v[k:k + 1] for m, v in x.items()}, active[k])
        torch.testing.assert_close(pred.mean[k:k + 1], one.mean, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(pred.scale_tril[k:k + 1], one.scale_tril, atol=1e-5,
                                   rtol=1e-5)


def test_input_reference_survives_the_parts_and_per_mask_groups():
    """The stem part subtracts each node's reference image, also when samples with different
    masks run as separate groups."""
    model, controller = tiny_modules(input_reference=["depth"])
    ref = model.backbones["depth"].input_reference
    ref.copy_(torch.rand(ref.shape, generator=torch.Generator().manual_seed(5)))
    engine = make_backend("eager", model, controller, device="cpu")
    batch = 4
    x, active = tiny_inputs(model.cfg, batch, seed=6), masks(model.cfg, batch, seed=7)
    with torch.no_grad():
        want = model(x, active)
    assert_pred_close(engine.run(x, active), want)
    with torch.no_grad():  # the reference matters: without it the output differs
        ref.zero_()
        assert not torch.allclose(model(x, active).mean, want.mean, atol=1e-4)


def test_block_executions_follow_allocation(setup):
    model, _, engine = setup
    cfg, batch, s = model.cfg, 4, model.cfg.num_nodes
    active = masks(cfg, batch, seed=5)
    active[:, 0, 1] = True  # one block on for every sample -> one call on the full batch
    active[:, 1, 2] = False  # one block off everywhere -> never called
    calls = {}
    handles = []
    for j, m in enumerate(cfg.modalities):
        for i, blk in enumerate(model.backbones[m].blocks):
            def hook(mod, inp, out, key=(j, i)):
                calls.setdefault(key, []).append(inp[0].shape[0])
            handles.append(blk.register_forward_hook(hook))
    try:
        engine.run(tiny_inputs(cfg, batch), active)
    finally:
        for h in handles:
            h.remove()
    for j in range(cfg.num_modalities):
        for i in range(cfg.depth):
            n = int(active[:, j, i].sum())
            assert calls.get((j, i), []) == ([n * s] if n else []), (j, i)


def test_fallback_policy_without_controller():
    model, _ = tiny_modules()
    engine = make_backend("eager", model, None, device="cpu")
    res = engine.step(tiny_inputs(model.cfg, 1), 4)
    assert res.noise is None and int(res.mask.sum()) == 4


def test_bf16_on_cpu_is_close_to_fp32():
    model, controller = tiny_modules()
    x = tiny_inputs(model.cfg, 2)
    ref = make_backend("eager", model, controller, device="cpu").run(x, allocations(model.cfg)[0])
    model16, controller16 = tiny_modules()
    eng = make_backend("eager", model16, controller16, device="cpu", precision="bf16")
    pred = eng.run(x, allocations(model.cfg)[0])
    assert pred.mean.dtype == torch.float32
    assert float((pred.mean - ref.mean).abs().max()) < 10.0  # cm, on a +-200 cm arena


def test_bad_inputs_raise_value_error(setup):
    model, _, engine = setup
    cfg = model.cfg
    x = tiny_inputs(cfg, 2)
    full = allocations(cfg)[0]
    bad_inputs = [
        {m: v for m, v in x.items() if m != "rgb"},  # missing modality
        {**x, "rgb": x["rgb"][:, :, :, :8]},  # wrong size
        {**x, "depth": x["depth"].double()},  # wrong dtype
        {**x, "depth": (x["depth"] * 255).to(torch.uint8)},  # integer images
        {**x, "radar": x["radar"][:1]},  # batch mismatch
        {**x, "rgb": torch.full_like(x["rgb"], float("nan"))},  # NaN
        {**x, "rgb": torch.empty(x["rgb"].shape, device="meta")},  # wrong device
    ]
    for bad in bad_inputs:
        with pytest.raises(ValueError, match=r"inputs"):
            engine.run(bad, full)
    with pytest.raises(ValueError, match="device"):
        engine.run({**x, "rgb": torch.empty(x["rgb"].shape, device="meta")}, full)
    m, d = cfg.num_modalities, cfg.depth
    off = full.clone()
    off[1, 0] = False
    for bad_active, what in [
        (torch.ones(m, d + 1, dtype=torch.bool), r"\[3, 3\]"),
        (torch.ones(m, d), "bool"),
        (torch.ones(3, m, d, dtype=torch.bool), "batch size 2"),
        (off, "block 0"),
        ([[True] * d] * m, "expected"),
    ]:
        with pytest.raises(ValueError, match=what):
            engine.run(x, bad_active)
    with pytest.raises(ValueError, match="budget"):
        engine.step(x, cfg.total_blocks + 1)
    with pytest.raises(ValueError, match="precision"):
        make_backend("eager", *tiny_modules(), device="cpu", precision="fp16")
    with pytest.raises(ValueError, match="backend"):
        make_backend("onnx", *tiny_modules(), device="cpu")


def test_out_of_memory_message_names_batch_and_shapes(setup, monkeypatch):
    model, _, engine = setup

    def oom(x):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setitem(engine.stems, "rgb", oom)
    with pytest.raises(EngineOutOfMemoryError, match=r"batch 2 .*'rgb': \(2, 3, 3, 16, 16\)"):
        engine.run(tiny_inputs(model.cfg, 2), allocations(model.cfg)[0])


def test_backend_selection_on_cpu():
    assert resolve_backend("auto", "cpu") == "eager"
    assert resolve_backend("compile", "cpu") == "compile"
    assert "eager" in available_backends("cpu")
    assert "tensorrt" not in available_backends("cpu")
    assert backend_unavailable_reason("tensorrt", "cpu")


def test_shipped_weights_give_the_core_outputs_through_the_engine():
    """The default weights in models/ load unchanged and the overlapped engine reproduces the
    core controller's allocation and the core model's prediction with them."""
    from admn_ros.core.checkpoint import load_checkpoint

    model = load_checkpoint(ROOT / "models/admn_demo.pt", kind="admn").module.eval()
    controller = load_checkpoint(ROOT / "models/controller_demo_L6.pt",
                                 kind="controller").module.eval()
    engine = make_backend("eager", copy.deepcopy(model), copy.deepcopy(controller),
                          device="cpu")
    x = tiny_inputs(model.cfg, 2, seed=8)
    res = engine.step(x, 6)
    with torch.no_grad():
        out = controller(downsample(x, model.cfg.controller.img_size), 6, sample=False)
        ref = model(x, out.mask.bool())
    assert torch.equal(res.mask, out.mask.bool())
    assert_pred_close(res.prediction, ref)


def test_any_failure_at_warm_up_is_one_startup_line():
    model, controller = tiny_modules()
    engine = make_backend("eager", model, controller, device="cpu")

    def broken(*_):
        raise AssertionError("a library's internal check\nwith a second line")

    engine.fusion = broken
    with pytest.raises(EngineStartupError) as err:
        engine.warmup()
    assert str(err.value) == ("backend 'eager' (fp32, cpu) failed at warm-up: AssertionError: "
                              "a library's internal check")


def test_any_failure_while_building_is_one_startup_line(monkeypatch):
    from admn_ros.engine.base import Engine

    def out_of_memory(self, module):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")

    monkeypatch.setattr(Engine, "_prepare_module", out_of_memory)
    with pytest.raises(EngineStartupError) as err:
        make_backend("eager", *tiny_modules(), device="cpu")
    assert str(err.value) == ("backend 'eager' on cpu failed at start-up: RuntimeError: CUDA out "
                              "of memory. Tried to allocate 2.00 GiB")

"""torch.compile backend: the engine wiring traced by dynamo equals eager for several
allocations (compiler="eager" keeps it fast), and one tiny block compiled with inductor."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from test_engine_fixtures import masks, tiny_inputs, tiny_modules

from admn_ros.engine import make_backend
from admn_ros.engine.base import PINNED_THREAD
from admn_ros.engine.compiled import _CompiledPart, compile_unavailable_reason


def test_compile_engine_matches_eager_for_several_allocations():
    model, controller = tiny_modules()
    eager = make_backend("eager", model, controller, device="cpu")
    comp = make_backend("compile", model, controller, device="cpu", compiler="eager")
    x = tiny_inputs(model.cfg, 3)
    for budget in (3, 6, 9):
        a, b = eager.step(x, budget), comp.step(x, budget)
        assert torch.equal(a.mask, b.mask)
        torch.testing.assert_close(a.prediction.mean, b.prediction.mean, atol=1e-4, rtol=1e-4)
    active = masks(model.cfg, 3, seed=7)  # sub-batched: different shapes per block
    torch.testing.assert_close(eager.run(x, active).mean, comp.run(x, active).mean,
                               atol=1e-4, rtol=1e-4)
    parts = [comp.stems["rgb"], *comp.blocks["rgb"], comp.fusion, comp.controller_net]
    assert all(isinstance(p, _CompiledPart) and not p.failed for p in parts)


@pytest.mark.skipif(compile_unavailable_reason(torch.device("cpu")) is not None,
                    reason=compile_unavailable_reason(torch.device("cpu")) or "")
def test_inductor_compiles_one_tiny_block():
    model, _ = tiny_modules()
    block = model.backbones["depth"].blocks[1]
    part = _CompiledPart("block.depth.1", block, None, "inductor")
    x = torch.randn(3, 5, model.cfg.backbone.embed_dim)
    with torch.inference_mode():
        torch.testing.assert_close(part(x), block(x), atol=1e-5, rtol=1e-5)
    assert not part.failed


def test_failing_compile_falls_back_to_eager(caplog):
    model, _ = tiny_modules()
    block = model.backbones["rgb"].blocks[0]

    def broken_compiler(gm, example_inputs):
        raise RuntimeError("no kernels for this machine")

    part = _CompiledPart("block.rgb.0", block, None, broken_compiler)
    x = torch.randn(3, 5, model.cfg.backbone.embed_dim)
    with torch.inference_mode():
        out = part(x)
    torch.testing.assert_close(out, block(x))
    assert part.failed and "running it eagerly" in caplog.text


def test_engine_with_its_own_thread_runs_every_part_there():
    """With CUDA graphs the compile engine owns one thread (graphs are per thread): warm-up on
    the caller's thread and steps from a worker thread both run the parts on that one thread,
    with the same results as an engine without one."""
    model, controller = tiny_modules()
    engine = make_backend("eager", model, controller, device="cpu", overlap=False)
    engine._pin_thread()  # what CompileEngine does on CUDA
    seen = set()
    for blk in (model.backbones["rgb"].blocks[0], model.fusion.blocks[0]):
        blk.register_forward_pre_hook(lambda *_: seen.add(threading.current_thread().name))
    engine.warmup()
    x = tiny_inputs(model.cfg, 2)
    with ThreadPoolExecutor(1, "fusion-worker") as worker:
        res = worker.submit(engine.step, x, 5).result()
        pred = worker.submit(engine.run, x, res.mask).result()
    assert seen == {f"{PINNED_THREAD}_0"}
    ref = make_backend("eager", *tiny_modules(), device="cpu", overlap=False).step(x, 5)
    assert torch.equal(res.mask, ref.mask)
    torch.testing.assert_close(pred.mean, ref.prediction.mean, atol=1e-5, rtol=1e-5)


def test_compile_failure_with_an_empty_message_falls_back_and_is_reported(caplog):
    """Inductor's CUDA-graph assertions carry no message; the fallback used to crash on it
    (IndexError, seen on an H100). The engine runs eagerly and `describe` names the parts."""
    model, controller = tiny_modules()

    def asserting_compiler(gm, example_inputs):  # compiles, then fails when run
        def run(*args):
            raise AssertionError()
        return run

    engine = make_backend("compile", model, controller, device="cpu",
                          compiler=asserting_compiler)
    x = tiny_inputs(model.cfg, 2)
    ref = make_backend("eager", *tiny_modules(), device="cpu").step(x, 5)
    res = engine.step(x, 5)
    torch.testing.assert_close(res.prediction.mean, ref.prediction.mean, atol=1e-5, rtol=1e-5)
    fallback = engine.describe()["eager_fallback_parts"].split(", ")
    assert {"stem.rgb", "fusion", "controller"} <= set(fallback)
    assert "failed (AssertionError: ); running it eagerly" in caplog.text


def test_each_cuda_graph_engine_thread_has_its_own_graph_state():
    """A second CUDA-graph engine in one process captured nothing on torch 2.11 (its thread
    had no cudagraph-trees state): each engine's own thread now sets up its own."""
    from torch._inductor import cudagraph_trees

    def state() -> int:
        return id(cudagraph_trees.get_obj(cudagraph_trees.local, "tree_manager_containers")) \
            if hasattr(cudagraph_trees.local, "tree_manager_containers") else 0

    ids = []
    for _ in range(2):
        engine = make_backend("compile", *tiny_modules(), device="cpu", compiler="eager",
                              overlap=False)
        engine._pin_thread()  # what the engine does on CUDA with inductor
        ids.append(engine._pinned_pool.submit(state).result())
    assert 0 not in ids and len(set(ids)) == 2

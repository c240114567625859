"""TensorRT backend against a stub `torch_tensorrt`: the exact arguments it passes for fp16 and
fp32 on the current (explicit typing) and the older (weak typing) API, the part and inputs cast
to the precision, the engine cache reused, and a build failure reported as one line."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch
from test_engine_fixtures import tiny_inputs, tiny_modules

import admn_ros.engine.tensorrt as trt_backend
from admn_ros.engine import EngineStartupError, make_backend
from admn_ros.engine.tensorrt import TensorRTEngine, _EnginePart


class StubInput:
    def __init__(self, shape, dtype) -> None:
        self.shape, self.dtype = tuple(shape), dtype


class StubTorchTensorRT(types.ModuleType):
    """Records every `compile` call; `save` stores the module and writes its index."""

    def __init__(self, explicit_api: bool, fail: BaseException | None = None) -> None:
        super().__init__("torch_tensorrt")
        self.__version__ = "0.0.stub"
        self.Input = StubInput
        self.calls: list[dict] = []
        self.saved: list[torch.nn.Module] = []
        self.fail = fail

        def current(exported_program, inputs=None, *, enabled_precisions=None,
                    use_explicit_typing=True):
            """signature of torch_tensorrt.dynamo.compile with explicit typing"""

        def legacy(exported_program, inputs=None, *, enabled_precisions=None):
            """signature before explicit typing"""

        self.dynamo = types.SimpleNamespace(compile=current if explicit_api else legacy)

    def compile(self, module, ir, inputs, **kwargs):
        if self.fail is not None:
            raise self.fail
        self.calls.append({"module": module, "ir": ir, "inputs": inputs, "kwargs": kwargs})
        return module

    def save(self, gm, path, inputs):
        self.saved.append(gm)
        Path(path).write_bytes(str(len(self.saved) - 1).encode())


@pytest.fixture
def stub(monkeypatch):
    def install(explicit_api: bool = True, fail: BaseException | None = None):
        mod = StubTorchTensorRT(explicit_api, fail)
        monkeypatch.setitem(sys.modules, "torch_tensorrt", mod)
        monkeypatch.setattr(trt_backend, "tensorrt_unavailable_reason", lambda: None)
        monkeypatch.setattr(trt_backend, "load_engine", lambda payload: mod.saved[int(payload)])
        return mod

    return install


class CpuTensorRTEngine(TensorRTEngine):
    """The backend's own logic on the CPU (the stub builds nothing device-specific)."""

    def _gpu_name(self, device: torch.device) -> str:
        return "Stub GPU"


def owner(precision: str, explicit: bool):
    return types.SimpleNamespace(precision=precision, explicit_typing=explicit)


@pytest.mark.parametrize("precision,explicit,want_kwargs,want_dtype", [
    ("fp16", True, {"use_explicit_typing": True}, torch.float16),
    ("fp32", True, {"use_explicit_typing": True}, torch.float32),
    ("fp16", False, {"enabled_precisions": {torch.float16}}, torch.float32),
    ("fp32", False, {"enabled_precisions": {torch.float32}}, torch.float32),
])
def test_compile_arguments_for_each_precision_and_api(stub, precision, explicit, want_kwargs,
                                                      want_dtype):
    """Explicit typing: the part and its inputs arrive in the precision's dtype and
    `enabled_precisions` is not passed (with it, current releases raise AssertionError); weak
    typing: fp32 part and inputs, the precision in `enabled_precisions`."""
    trt = stub(explicit_api=explicit)
    assert trt_backend.explicit_typing_supported() is explicit
    model, _ = tiny_modules()
    block = model.backbones["rgb"].blocks[1].to(want_dtype)  # as the engine prepares it
    x = torch.randn(3, 5, 32, dtype=want_dtype)
    payload = _EnginePart(owner(precision, explicit), "block.rgb.1", block)._build((x,))
    (call,) = trt.calls
    assert call["module"] is block and call["ir"] == "dynamo"
    assert call["kwargs"] == want_kwargs
    assert [(i.shape, i.dtype) for i in call["inputs"]] == [((3, 5, 32), want_dtype)]
    assert all(p.dtype == want_dtype for p in call["module"].parameters())
    assert trt.saved[int(payload)] is block


@pytest.mark.parametrize("precision,dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_engine_casts_parts_builds_once_and_reuses_cache(stub, tmp_path, precision, dtype):
    trt = stub(explicit_api=True)
    model, controller = tiny_modules()
    x = tiny_inputs(model.cfg, 1)
    ref = make_backend("eager", *tiny_modules(), device="cpu",
                       precision=precision).step(x, 5)
    engine = CpuTensorRTEngine(model, controller, device="cpu", precision=precision,
                               cache_dir=tmp_path)
    res = engine.step(x, 5)
    assert torch.equal(res.mask, ref.mask)
    torch.testing.assert_close(res.prediction.mean, ref.prediction.mean, atol=1e-3, rtol=1e-3)
    assert res.prediction.mean.dtype == torch.float32
    built = {c["module"] for c in trt.calls}
    assert len(built) == len(trt.calls) == engine.cache.builds > 0  # one engine per part/shape
    for call in trt.calls:
        assert call["kwargs"] == {"use_explicit_typing": True}
        assert {i.dtype for i in call["inputs"]} <= {dtype, torch.int64}  # budget: long
        assert all(p.dtype == dtype for p in call["module"].parameters())
    n = len(trt.calls)
    again = CpuTensorRTEngine(*tiny_modules(), device="cpu", precision=precision,
                              cache_dir=tmp_path)
    again.step(x, 5)
    assert len(trt.calls) == n and again.cache.builds == 0 and again.cache.hits == n


def test_build_failure_is_one_clear_line(stub, tmp_path):
    stub(fail=AssertionError("When use_explicit_typing is enabled, only torch.float32 is "
                             "allowed in the enabled_precisions\nTraceback follows"))
    engine = CpuTensorRTEngine(*tiny_modules(), device="cpu", precision="fp32",
                               cache_dir=tmp_path)
    with pytest.raises(EngineStartupError) as err:
        engine.warmup()
    msg = str(err.value)
    assert "\n" not in msg and "AssertionError" in msg and "tensorrt" in msg
    assert "part " in msg and "--backend compile or eager" in msg
    assert not list(tmp_path.glob("*.engine"))  # nothing half-built is cached


def test_tensorrt_needs_cuda(stub):
    stub()
    with pytest.raises(ValueError, match="CUDA device"):
        TensorRTEngine(*tiny_modules(), device="cpu")

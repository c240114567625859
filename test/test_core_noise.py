"""Corruptions: sigma laws, clipping, normalised sigma, occlusion / low light / dropout."""

from __future__ import annotations

import pytest
import torch

from admn_ros.core.noise import (
    NoiseConfig,
    add_gaussian_noise,
    corrupt,
    frame_dropout,
    low_light,
    occlude,
    sample_sigma,
)

MODS = ["rgb", "depth", "radar"]


def views(batch: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {m: torch.rand(batch, 3, 1 if m != "rgb" else 3, 8, 8, generator=g) for m in MODS}


@pytest.mark.parametrize("kind", ["binary", "discrete", "continuous"])
def test_sigma_laws(kind: str) -> None:
    cfg = NoiseConfig()
    s = sample_sigma(cfg, MODS, 2000, 3, kind, torch.Generator().manual_seed(0))
    assert s.shape == (2000, 3, 3)
    for i, m in enumerate(MODS):
        col, hi = s[..., i], cfg.max_sigma(m)
        if kind == "binary":
            assert set(col.unique().tolist()) == {0.0, hi}
            assert abs((col > 0).float().mean().item() - 0.5) < 0.05
        elif kind == "discrete":
            assert set(col.unique().tolist()) == set(cfg.levels[m])
        else:
            assert col.min() >= 0 and col.max() <= hi and abs(col.mean() - hi / 2) < 0.05 * hi


def test_corrupt_clipped_and_normalised_sigma() -> None:
    out = corrupt(views(), NoiseConfig(kind="continuous"), generator=torch.Generator())
    assert out.sigma.shape == (4, 3, 3) and bool(((out.sigma >= 0) & (out.sigma <= 1)).all())
    torch.testing.assert_close(out.sigma[..., 0] * 3.0, out.sigma_abs[..., 0])
    for x in out.inputs.values():
        assert x.min() >= 0 and x.max() <= 1


def test_zero_sigma_is_identity_and_seeded() -> None:
    x = views()["rgb"]
    assert torch.equal(add_gaussian_noise(x, 0.0), x)
    a = add_gaussian_noise(x, 0.5, torch.Generator().manual_seed(2))
    b = add_gaussian_noise(x, 0.5, torch.Generator().manual_seed(2))
    assert torch.equal(a, b)


def test_node_shared_prob() -> None:
    always = sample_sigma(NoiseConfig(kind="continuous", node_shared_prob=1.0), MODS, 5, 3)
    assert torch.equal(always[:, 0], always[:, 2])
    never = sample_sigma(NoiseConfig(kind="continuous"), MODS, 5, 3)
    assert not torch.equal(never[:, 0], never[:, 2])
    # half the (sample, modality) pairs shared: every node equal there, per node elsewhere
    half = sample_sigma(NoiseConfig(kind="continuous", node_shared_prob=0.5), MODS, 2000, 3,
                        generator=torch.Generator().manual_seed(0))
    same = (half == half[:, :1]).all(1)  # [B, M]
    assert 0.45 < same.float().mean().item() < 0.55
    with pytest.raises(ValueError, match="node_shared_prob"):
        NoiseConfig(node_shared_prob=1.5)


def test_other_corruptions() -> None:
    x = torch.ones(2, 3, 1, 8, 8)
    occ = occlude(x, torch.tensor([[0.25, 0.0, 1.0], [0.0, 0.0, 0.0]]))
    assert (occ[0, 0] == 0).sum() == 16 and bool(occ[0, 1].all()) and not occ[0, 2].any()
    assert torch.allclose(low_light(x, 0.3), torch.full_like(x, 0.3))
    drop = frame_dropout(x, torch.tensor([[True, False, False], [False, False, True]]))
    assert drop[0, 0].sum() == 0 and drop[1, 2].sum() == 0 and drop[0, 1].sum() == 64


@pytest.mark.parametrize(
    "call",
    [
        lambda: add_gaussian_noise(torch.rand(2, 3, 8, 8), 0.1),
        lambda: add_gaussian_noise(torch.rand(2, 3, 1, 8, 8), torch.ones(3)),
        lambda: occlude(torch.rand(2, 3, 1, 8, 8), 1.5),
        lambda: low_light(torch.rand(2, 3, 1, 8, 8), -0.1),
        lambda: frame_dropout(torch.rand(2, 3, 1, 8, 8), torch.ones(2, 3)),
        lambda: sample_sigma(NoiseConfig(), ["audio"], 2, 3),
        lambda: sample_sigma(NoiseConfig(), MODS, 2, 3, "pink"),
        lambda: NoiseConfig(levels={"rgb": [0.0]}),
    ],
)
def test_bad_arguments(call) -> None:
    with pytest.raises(ValueError, match="expected"):
        call()


def test_grid_noise_keeps_sigma_after_resizing_to_the_grid() -> None:
    x = torch.full((1, 1, 1, 256, 256), 0.5)
    g = torch.Generator().manual_seed(0)

    def std_at_64(y: torch.Tensor) -> float:
        return torch.nn.functional.interpolate(y[0], size=(64, 64), mode="area").std().item()

    per_pixel = std_at_64(add_gaussian_noise(x, 0.1, g))
    on_grid = std_at_64(add_gaussian_noise(x, 0.1, g, grid=64))
    assert on_grid == pytest.approx(0.1, rel=0.05)
    assert per_pixel == pytest.approx(0.1 / 4, rel=0.1)  # 4 x 4 pixels averaged per cell

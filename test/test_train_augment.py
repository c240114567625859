"""Brightness augmentation of the backbone stage."""

from __future__ import annotations

import pytest
import torch

from admn_ros.train.augment import jitter_brightness


def test_jitter_scales_each_view_within_strength_and_stays_in_range():
    x = torch.full((4, 3, 3, 8, 8), 0.5)
    y = jitter_brightness(x, 0.3, torch.Generator().manual_seed(0))
    ratio = (y / x)[..., 0, 0]  # [B, S, C]: one gain per view and channel
    assert torch.allclose(y, ratio[..., None, None] * x)
    assert ratio.min() >= (1 - 0.3) * (1 - 0.075) - 1e-6
    assert ratio.max() <= (1 + 0.3) * (1 + 0.075) + 1e-6
    assert ratio.std() > 0.01  # views differ
    bright = jitter_brightness(torch.ones(2, 3, 3, 4, 4), 0.5, torch.Generator().manual_seed(1))
    assert bright.max() <= 1.0


def test_zero_strength_is_identity_and_bad_strength_is_an_error():
    x = torch.rand(2, 3, 3, 4, 4)
    assert jitter_brightness(x, 0.0) is x
    with pytest.raises(ValueError, match="rgb_jitter"):
        jitter_brightness(x, 1.5)

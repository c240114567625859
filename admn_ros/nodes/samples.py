"""From synchronised sensor messages to model inputs, and exact-stamp pairing; no ROS here."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from torch import Tensor

from admn_ros.data.preprocess import Preprocess
from admn_ros.nodes.images import decode
from admn_ros.nodes.sync import SyncedSample


def sample_inputs(sample: SyncedSample, modalities: list[str], nodes: list[str],
                  pre: Preprocess) -> dict[str, Tensor]:
    """Decode + normalise every (node, modality): `{m: [1, S, C, s, s]}` float32.
    Raises `images.InputError` (with a drop reason) or ValueError from Preprocess."""
    out = {}
    for m in modalities:
        views = [pre.numpy(m, decode(m, sample.msgs[(n, m)])) for n in nodes]
        out[m] = torch.from_numpy(np.stack(views))[None]
    return out


class StampedBuffer:
    """Recent messages per (node, modality), to rebuild the sample an allocation names.

    The controller stamps a sample with its newest camera stamp; given that stamp, the set is
    rebuilt deterministically: per camera input the newest message in [stamp - slop, stamp],
    per slow input (radar) the newest in [stamp - max_age, stamp + slop]. Arrival order
    does not matter, so both nodes agree even when their callbacks interleave differently.
    """

    def __init__(self, keys: list[tuple[str, str]], slow: tuple[str, ...], slop_ns: int,
                 max_age_ns: int, keep: int = 30) -> None:
        self.keys, self.slow = list(keys), slow
        self.slop_ns, self.max_age_ns = slop_ns, max_age_ns
        self.frames: dict[tuple[str, str], OrderedDict[int, Any]] = {k: OrderedDict()
                                                                     for k in keys}
        self.keep = keep

    def add(self, key: tuple[str, str], stamp: int, msg: Any) -> bool:
        """Store; returns False (and starts over) when the clock went backwards."""
        buf = self.frames[key]
        if buf and stamp < next(reversed(buf)):
            for b in self.frames.values():
                b.clear()
            buf[stamp] = msg
            return False
        buf[stamp] = msg
        while len(buf) > self.keep:
            buf.popitem(last=False)
        return True

    def window(self, key: tuple[str, str], stamp: int) -> tuple[int, int]:
        if key[1] in self.slow:
            return stamp - self.max_age_ns, stamp + self.slop_ns
        return stamp - self.slop_ns, stamp

    def assemble(self, stamp: int) -> SyncedSample | bool | None:
        """The sample stamped `stamp`; None while an input may still deliver a frame in its
        window; False when one never will (a newer frame of that input is already here)."""
        msgs, stamps = {}, {}
        for key in self.keys:
            lo, hi = self.window(key, stamp)
            found = [s for s in self.frames[key] if lo <= s <= hi]
            if not found:
                newest = next(reversed(self.frames[key]), None)
                return False if newest is not None and newest > hi else None
            stamps[key] = max(found)
            msgs[key] = self.frames[key][stamps[key]]
        return SyncedSample(stamp, msgs, stamps)

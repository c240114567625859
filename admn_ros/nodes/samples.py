"""From synchronised sensor frames to model inputs, and exact-stamp pairing; no ROS here.

The frames are the arrays `arrival.Arrivals` decoded and checked when they arrived."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from torch import Tensor

from admn_ros.data.preprocess import Preprocess
from admn_ros.nodes.sync import ADD, CLOCK_JUMP, LatestWithin, StampGuard, SyncedSample


class Prepared:
    """Normalise once per frame (frames are decoded on arrival, `arrival.Arrivals`): the
    model-ready arrays of the last `keep` frames by (node, modality, stamp), so a frame several
    samples share (a 4 Hz radar frame serves about four 15 Hz camera sets) is prepared once."""

    def __init__(self, pre: Preprocess, keep: int = 64) -> None:
        self.pre, self.keep = pre, keep
        self.arrays: OrderedDict[tuple[str, str, int], np.ndarray] = OrderedDict()

    def __call__(self, key: tuple[str, str], stamp: int, frame: np.ndarray) -> np.ndarray:
        ident = (*key, stamp)
        if ident not in self.arrays:
            self.arrays[ident] = self.pre.numpy(key[1], frame)
            while len(self.arrays) > self.keep:
                self.arrays.popitem(last=False)
        return self.arrays[ident]


def sample_inputs(sample: SyncedSample, modalities: list[str], nodes: list[str],
                  prepare: Prepared) -> dict[str, Tensor]:
    """Normalise every decoded (node, modality) frame, once per frame (`Prepared`):
    `{m: [1, S, C, s, s]}` float32. Raises ValueError from Preprocess."""
    out = {}
    for m in modalities:
        views = [prepare((n, m), sample.stamps[(n, m)], sample.msgs[(n, m)]) for n in nodes]
        out[m] = torch.from_numpy(np.stack(views))[None]
    return out


class StampedBuffer:
    """Recent messages per (node, modality), to rebuild the sample an allocation names.

    The controller stamps a sample with its newest camera stamp; given that stamp, the set is
    rebuilt deterministically: per camera input the newest message in [stamp - slop, stamp],
    per slow input (radar) the frame `sync.LatestWithin` picks once it is settled, the very
    rule the controller's `SampleSync` applies. Arrival order does not matter, so both nodes
    agree even when their callbacks interleave differently.
    """

    def __init__(self, keys: list[tuple[str, str]], slow: tuple[str, ...], slop_ns: int,
                 max_age_ns: int, min_period_ns: int, keep: int = 30,
                 ahead_ns: int = 5 * 1_000_000_000, jump_topics: int = 2) -> None:
        self.keys, self.slop_ns = list(keys), slop_ns
        self.frames: dict[tuple[str, str], OrderedDict[int, Any]] = {
            k: OrderedDict() for k in keys if k[1] not in slow}
        self.slow = {k: LatestWithin(max_age_ns, slop_ns, min_period_ns, keep) for k in keys
                     if k[1] in slow}
        self.guard = StampGuard(ahead_ns, jump_topics)  # the controller's `SampleSync` rule
        self.keep = keep

    def add(self, key: tuple[str, str], stamp: int, msg: Any) -> list[str]:
        """Store (the controller's `StampGuard` rule); returns what else happened:
        `bad_stamp` per outlier frame rejected, `clock_backwards` when the clock jumped back
        and the buffers started over."""
        events = []
        for event in self.guard.check(key, stamp, msg):
            if event[0] == ADD:
                self._store(*event[1:])
            else:
                events.append(event[0])
                if event[0] == CLOCK_JUMP:
                    self.clear()
        return events

    def _store(self, key: tuple[str, str], stamp: int, msg: Any) -> None:
        if key in self.slow:
            self.slow[key].add(stamp, msg)
            return
        buf = self.frames[key]
        while buf and next(reversed(buf)) > stamp:  # an outlier it stepped back from
            buf.popitem()
        buf[stamp] = msg
        while len(buf) > self.keep:
            buf.popitem(last=False)

    def clear(self) -> None:
        for b in self.frames.values():
            b.clear()
        for lw in self.slow.values():
            lw.frames.clear()

    @property
    def now_ns(self) -> int:
        """The newest camera stamp, as the guard accepted it (as `SampleSync.now_ns`)."""
        return max((self.guard.last.get(k, 0) for k in self.frames), default=0)

    def assemble(self, stamp: int) -> SyncedSample | bool | None:
        """The sample stamped `stamp`; None while an input may still deliver its frame;
        False when one never will (a camera moved past its window, or no radar within
        max_age once settled)."""
        msgs, stamps = {}, {}
        for key, buf in self.frames.items():
            found = [s for s in buf if stamp - self.slop_ns <= s <= stamp]
            if not found:
                newest = next(reversed(buf), None)
                return False if newest is not None and newest > stamp else None
            stamps[key] = max(found)
            msgs[key] = buf[stamps[key]]
        for key, latest in self.slow.items():
            if not latest.settled(stamp, self.now_ns):
                return None
            picked = latest.pick(stamp)
            if picked is None:
                return False
            stamps[key], msgs[key] = picked
        return SyncedSample(stamp, {k: msgs[k] for k in self.keys},
                            {k: stamps[k] for k in self.keys})

"""Approximate-time pairing of the 9 sensor topics, without ROS.

`ApproximateSync` follows the documented semantics of ROS 2 `message_filters`'
`ApproximateTimeSynchronizer` (Python implementation): one bounded queue per input keyed by
header stamp (oldest dropped beyond `queue_size`); when a message arrives, the other queues'
stamps within `slop` of it are tried, closest first, and the first combination whose spread
(max - min) is below `slop` is emitted and removed from the queues.

Radar runs at 4 Hz while cameras run at 15 Hz, so radar is not paired by approximate time:
`LatestWithin` keeps the recent radar frames per node; the radar frame of a camera stamp t is
the latest one with t - max_age <= stamp <= t + slop. Radar and camera frames of one instant
may be handled in either order, so that choice is only made once it is `settled`: no radar
frame can still arrive inside the window (the latest arrived is past t + slop, or too recent
for another one to fit before t + slop, given the radar's shortest period), or the cameras
have moved more than max_age past t (the radar is late or gone: bounded wait).

`SampleSync` combines both: the camera set of every node is synchronised and held until the
radar of every node is settled for its stamp, then the radar is attached (or the set is
dropped as `radar_missing`); the sample is stamped with the newest camera stamp. Held sets
are released in stamp order. The fusion node's `samples.StampedBuffer` applies the same
`LatestWithin` rule, so both nodes pick the same radar frame for a stamp.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

NS = 1_000_000_000
# Radar frames kept per node: ~10 s at 4 Hz. Few and small, the radar frames are taken in
# long before a backlog of camera frames is (measured: 2 s ahead after a CPU stall), and
# the frame a late camera set needs must still be here.
SLOW_KEEP = 40


class ApproximateSync:
    """message_filters-like approximate time synchroniser over N inputs (stamps in ns)."""

    def __init__(self, num_inputs: int, queue_size: int, slop_ns: int,
                 callback: Callable[..., None]) -> None:
        if num_inputs < 1 or queue_size < 1 or slop_ns < 0:
            raise ValueError(f"ApproximateSync: expected inputs >= 1, queue_size >= 1, slop >= 0; "
                             f"got {num_inputs}, {queue_size}, {slop_ns}")
        self.queues: list[dict[int, Any]] = [{} for _ in range(num_inputs)]
        self.queue_size = queue_size
        self.slop_ns = slop_ns
        self.callback = callback

    def reset(self) -> None:
        for q in self.queues:
            q.clear()

    def add(self, index: int, stamp_ns: int, msg: Any) -> bool:
        """Queue `msg` on input `index`; emit a set if one completes. Returns True if emitted."""
        my_queue = self.queues[index]
        my_queue[stamp_ns] = msg
        while len(my_queue) > self.queue_size:
            del my_queue[min(my_queue)]
        candidates = []
        for i, q in enumerate(self.queues):
            if i == index:
                continue
            near = sorted((abs(s - stamp_ns), s) for s in q if abs(s - stamp_ns) <= self.slop_ns)
            if not near:
                return False
            candidates.append([s for _, s in near])
        for combo in itertools.product(*candidates):
            stamps = list(combo)
            stamps.insert(index, stamp_ns)
            if max(stamps) - min(stamps) < self.slop_ns:
                msgs = [q[s] for q, s in zip(self.queues, stamps, strict=True)]
                for q, s in zip(self.queues, stamps, strict=True):
                    del q[s]
                self.callback(*msgs)
                return True
        return False


class LatestWithin:
    """Recent frames of one slow input; `pick(t)` = latest with t - max_age <= stamp <= t + slop,
    final once `settled(t, now)`."""

    def __init__(self, max_age_ns: int, slop_ns: int, min_period_ns: int,
                 keep: int = SLOW_KEEP) -> None:
        if min_period_ns <= 2 * slop_ns:
            raise ValueError(f"LatestWithin: expected min_period > 2 * slop (one frame per "
                             f"window), got {min_period_ns} ns and slop {slop_ns} ns")
        self.max_age_ns, self.slop_ns, self.min_period_ns = max_age_ns, slop_ns, min_period_ns
        self.frames: deque[tuple[int, Any]] = deque(maxlen=keep)

    def add(self, stamp_ns: int, msg: Any) -> bool:
        """Store; returns False (and starts over) when the clock went backwards."""
        backwards = bool(self.frames) and stamp_ns < self.frames[-1][0]
        if backwards:
            self.frames.clear()  # looping bag: start over
        self.frames.append((stamp_ns, msg))
        return not backwards

    def settled(self, stamp_ns: int, now_ns: int) -> bool:
        """Whether `pick(stamp_ns)` is final, `now_ns` being the newest camera stamp: no frame
        can still arrive in the window, or the wait is over (now past stamp + max_age)."""
        if now_ns > stamp_ns + self.max_age_ns:
            return True
        return bool(self.frames) and self.frames[-1][0] + self.min_period_ns > (
            stamp_ns + self.slop_ns)

    def pick(self, stamp_ns: int) -> tuple[int, Any] | None:
        for s, msg in reversed(self.frames):
            if s <= stamp_ns + self.slop_ns:
                return (s, msg) if stamp_ns - s <= self.max_age_ns else None
        return None


@dataclass
class SyncedSample:
    """One synchronised sample: raw messages per (node, modality), stamped for pairing."""

    stamp_ns: int
    msgs: dict[tuple[str, str], Any]  # (node, modality) -> message
    stamps: dict[tuple[str, str], int]


class SampleSync:
    """Camera topics by approximate time, slow topics (radar) by latest within max age.

    `keys` are (node, modality) pairs; those whose modality is in `slow` are the latest-within
    inputs (at most one frame per `min_period_s`). `on_sample(SyncedSample)` gets each complete
    sample; `on_drop(reason)` counts the camera sets that could not be completed
    ("radar_missing"; "clock_backwards": once for the jump and once per set it discarded).
    Sets still `held` when the sensors stop (end of a bag) are neither.
    """

    def __init__(self, keys: Sequence[tuple[str, str]], slow: Sequence[str], queue_size: int,
                 slop_s: float, max_age_s: float, min_period_s: float,
                 on_sample: Callable[[SyncedSample], None],
                 on_drop: Callable[[str], None]) -> None:
        self.fast = [k for k in keys if k[1] not in slow]
        self.slow = {k: LatestWithin(int(max_age_s * NS), int(slop_s * NS),
                                     int(min_period_s * NS)) for k in keys if k[1] in slow}
        self.index = {k: i for i, k in enumerate(self.fast)}
        self.sync = ApproximateSync(len(self.fast), queue_size, int(slop_s * NS), self.add_set)
        self.on_sample, self.on_drop = on_sample, on_drop
        self.last_ns: dict[Hashable, int] = {}
        self.held: deque[tuple[int, dict, dict]] = deque()  # camera sets waiting for radar
        self.now_ns = 0  # newest camera stamp

    def add(self, key: tuple[str, str], stamp_ns: int, msg: Any) -> None:
        last = self.last_ns.get(key)
        self.last_ns[key] = stamp_ns
        if last is not None and stamp_ns < last:
            # looping bag or clock reset: flush every queue; the held sets are lost with it
            for _ in range(1 + len(self.held)):
                self.on_drop("clock_backwards")
            self.sync.reset()
            self.held.clear()
            for k in self.slow:
                self.slow[k].frames.clear()
            self.last_ns = {key: stamp_ns}
            self.now_ns = 0
        if key in self.slow:
            self.slow[key].add(stamp_ns, msg)
        elif key in self.index:
            self.now_ns = max(self.now_ns, stamp_ns)
            self.sync.add(self.index[key], stamp_ns, (stamp_ns, msg))
        else:
            raise ValueError(f"SampleSync: unknown input {key}, expected one of "
                             f"{[*self.fast, *self.slow]}")
        self._release()

    def add_set(self, *items: tuple[int, Any]) -> None:
        """A synchronised camera set, (stamp, msg) per camera input in `keys` order (from
        `ApproximateSync`, or message_filters where installed): held until its radar settles."""
        stamp = max(s for s, _ in items)
        msgs = {k: m for k, (_, m) in zip(self.fast, items, strict=True)}
        stamps = {k: s for k, (s, _) in zip(self.fast, items, strict=True)}
        self.now_ns = max(self.now_ns, stamp)
        self.held.append((stamp, msgs, stamps))
        self._release()

    def _release(self) -> None:
        """Complete the held camera sets whose radar is settled, oldest first."""
        while self.held and all(lw.settled(self.held[0][0], self.now_ns)
                                for lw in self.slow.values()):
            stamp, msgs, stamps = self.held.popleft()
            self._complete(stamp, msgs, stamps)

    def _complete(self, stamp: int, msgs: dict, stamps: dict) -> None:
        for key, latest in self.slow.items():
            picked = latest.pick(stamp)
            if picked is None:
                self.on_drop(f"{key[1]}_missing")
                return
            stamps[key], msgs[key] = picked
        self.on_sample(SyncedSample(stamp, msgs, stamps))

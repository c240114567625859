"""Approximate-time pairing of the 9 sensor topics, without ROS.

`ApproximateSync` follows the documented semantics of ROS 2 `message_filters`'
`ApproximateTimeSynchronizer` (Python implementation): one bounded queue per input keyed by
header stamp (oldest dropped beyond `queue_size`); when a message arrives, the other queues'
stamps within `slop` of it are tried, closest first, and the first combination whose spread
(max - min) is below `slop` is emitted and removed from the queues. Each input delivers in
stamp order, so the frames older than an emitted set can no longer form one: they leave the
queues then (`on_evict`) instead of when the queue overflows.

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

Stamps are judged per topic by `StampGuard` before anything is queued: a lone outlier (a
frame far ahead of the other topics, or one topic stepping back) is rejected as `bad_stamp`
and costs nothing else; only a consistent jump (several topics going back together, as when
a bag loops) starts the synchroniser over. Every camera set ends as a sample or a counted
drop: sets that never complete (a frame lost or rejected) leave their frames behind in the
queues, and these are counted once per set (`incomplete_set`) when the bounded queues let
them go, or when `flush` releases them (end of input, clock jump).
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from admn_ros.nodes.arrival import GapCounter

NS = 1_000_000_000
# Radar frames kept per node: ~10 s at 4 Hz. Few and small, the radar frames are taken in
# long before a backlog of camera frames is (measured: 2 s ahead after a CPU stall), and
# the frame a late camera set needs must still be here.
SLOW_KEEP = 40
BAD_STAMP, CLOCK_JUMP, ADD = "bad_stamp", "clock_backwards", "add"
# A topic that alone keeps stepping back for this many frames had an outlier as its last
# stamp (accepted before any other topic could vouch against it): it is followed again.
RECOVER_FRAMES = 3
RECENT_SETS = 64  # stamps of recently counted incomplete sets and rejected frames
# Sets are seen out of stamp order by up to a queue's span (an incomplete one leaves when its
# queue overflows); the sequence is judged for gaps this far behind the newest set.
SEQUENCE_LAG_NS = 2 * NS


class StampGuard:
    """Per-topic stamp order: tells a lone outlier from a consistent jump back.

    `check(key, stamp, frame)` returns what to do, in order: `(ADD, key, stamp, frame)`,
    `(BAD_STAMP,)` (one frame rejected) or `(CLOCK_JUMP,)` (start over). A frame more than
    `ahead_ns` ahead of every other topic is an outlier. A frame stepping back is kept aside:
    when `jump_topics` topics have stepped back, the clock jumped (a bag looped) and the frames
    kept aside start the new timeline; when its topic goes forward again, they were outliers.
    """

    def __init__(self, ahead_ns: int, jump_topics: int) -> None:
        if ahead_ns <= 0 or jump_topics < 1:
            raise ValueError(f"StampGuard: expected ahead > 0 and jump_topics >= 1, got "
                             f"{ahead_ns} ns and {jump_topics}")
        self.ahead_ns, self.jump_topics = ahead_ns, jump_topics
        self.last: dict[Hashable, int] = {}
        self.aside: dict[Hashable, list[tuple[int, Any]]] = {}  # frames stepping back
        self.jumps = 0

    def check(self, key: Hashable, stamp_ns: int, frame: Any) -> list[tuple]:
        others = [s for k, s in self.last.items() if k != key]
        if others and stamp_ns > max(others) + self.ahead_ns:
            return [(BAD_STAMP,)]
        last = self.last.get(key)
        if last is not None and stamp_ns < last:
            self.aside.setdefault(key, []).append((stamp_ns, frame))
            if len(self.aside) >= self.jump_topics:
                return self._jump()
            if len(self.aside[key]) < RECOVER_FRAMES:
                return []  # judged when its topic goes on
            self.last[key] = stamp_ns  # alone, for several frames: its last was the outlier
            return [(ADD, key, s, f) for s, f in self.aside.pop(key)]
        outliers = self.aside.pop(key, [])
        self.last[key] = stamp_ns
        return [(BAD_STAMP,)] * len(outliers) + [(ADD, key, stamp_ns, frame)]

    def _jump(self) -> list[tuple]:
        """The clock went back: the frames kept aside, in stamp order, start the new one."""
        frames = sorted(((s, i, k, f) for k, fs in self.aside.items()
                         for i, (s, f) in enumerate(fs)), key=lambda x: (x[0], x[1]))
        self.jumps += 1
        self.aside = {}
        self.last = {}
        for s, _, k, _ in frames:
            self.last[k] = max(s, self.last.get(k, s))
        return [(CLOCK_JUMP,)] + [(ADD, k, s, f) for s, _, k, f in frames]

    def reset(self) -> None:
        self.last.clear()
        self.aside.clear()


class ApproximateSync:
    """message_filters-like approximate time synchroniser over N inputs (stamps in ns)."""

    def __init__(self, num_inputs: int, queue_size: int, slop_ns: int,
                 callback: Callable[..., None],
                 on_evict: Callable[[int, int], None] | None = None) -> None:
        if num_inputs < 1 or queue_size < 1 or slop_ns < 0:
            raise ValueError(f"ApproximateSync: expected inputs >= 1, queue_size >= 1, slop >= 0; "
                             f"got {num_inputs}, {queue_size}, {slop_ns}")
        self.queues: list[dict[int, Any]] = [{} for _ in range(num_inputs)]
        self.queue_size = queue_size
        self.slop_ns = slop_ns
        self.callback = callback
        self.on_evict = on_evict  # (input, stamp) of a frame dropped from a full queue

    def reset(self) -> None:
        for q in self.queues:
            q.clear()

    def add(self, index: int, stamp_ns: int, msg: Any) -> bool:
        """Queue `msg` on input `index`; emit a set if one completes. Returns True if emitted."""
        my_queue = self.queues[index]
        for s in [s for s in my_queue if s > stamp_ns]:  # an outlier this input stepped back
            del my_queue[s]                                # from: forget it
        my_queue[stamp_ns] = msg
        while len(my_queue) > self.queue_size:
            oldest = min(my_queue)
            del my_queue[oldest]
            if self.on_evict is not None:
                self.on_evict(index, oldest)
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
                gone = []  # each input delivers in order: older frames can no longer pair
                for i, (q, s) in enumerate(zip(self.queues, stamps, strict=True)):
                    del q[s]
                    gone += [(o, i) for o in q if o < s]
                for o, i in sorted(gone):
                    del self.queues[i][o]
                    if self.on_evict is not None:
                        self.on_evict(i, o)
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

    def add(self, stamp_ns: int, msg: Any) -> None:
        """Store; frames stamped after it (an outlier it stepped back from) are forgotten."""
        while self.frames and self.frames[-1][0] > stamp_ns:
            self.frames.pop()
        self.frames.append((stamp_ns, msg))

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
    sample; `on_drop(reason)` counts each camera set that ends otherwise: `radar_missing`,
    `incomplete_set` (a camera frame never came; not counted again when a frame near its
    stamp was rejected on arrival, which counted it under its own reason), `lost_set` (a gap
    in the sequence of sets: every camera frame of it was lost), `bad_stamp` (an
    outlier frame), `clock_backwards` (sets of the old timeline when the clock jumped back),
    and whatever reason `flush` is given.
    """

    def __init__(self, keys: Sequence[tuple[str, str]], slow: Sequence[str], queue_size: int,
                 slop_s: float, max_age_s: float, min_period_s: float,
                 on_sample: Callable[[SyncedSample], None],
                 on_drop: Callable[[str], None], ahead_s: float = 5.0,
                 jump_topics: int = 2) -> None:
        self.fast = [k for k in keys if k[1] not in slow]
        self.slow = {k: LatestWithin(int(max_age_s * NS), int(slop_s * NS),
                                     int(min_period_s * NS)) for k in keys if k[1] in slow}
        self.index = {k: i for i, k in enumerate(self.fast)}
        self.slop_ns = int(slop_s * NS)
        self.sync = ApproximateSync(len(self.fast), queue_size, self.slop_ns, self.add_set,
                                    on_evict=lambda i, s: self._orphan(s, "incomplete_set"))
        self.guard = StampGuard(int(ahead_s * NS), jump_topics)
        self.on_sample, self.on_drop = on_sample, on_drop
        self.held: deque[tuple[int, dict, dict]] = deque()  # camera sets waiting for radar
        self.counted: deque[int] = deque(maxlen=RECENT_SETS)  # incomplete sets counted
        self.rejected: deque[int] = deque(maxlen=RECENT_SETS)  # camera frames rejected
        self.sets = GapCounter()  # the sequence of camera sets, complete or not ...
        self.seen: list[int] = []  # ... as a heap of the recent ones, judged in stamp order

    def add(self, key: tuple[str, str], stamp_ns: int, msg: Any) -> None:
        if key not in self.slow and key not in self.index:
            raise ValueError(f"SampleSync: unknown input {key}, expected one of "
                             f"{[*self.fast, *self.slow]}")
        for event in self.guard.check(key, stamp_ns, msg):
            if event[0] == BAD_STAMP:
                self.on_drop(BAD_STAMP)
                self.note_rejected(key, stamp_ns)
            elif event[0] == CLOCK_JUMP:  # looping bag or clock reset: the old sets go
                self.flush(CLOCK_JUMP)
            else:
                self._store(*event[1:])
        self._release()

    def _store(self, key: tuple[str, str], stamp_ns: int, msg: Any) -> None:
        if key in self.slow:
            self.slow[key].add(stamp_ns, msg)
        else:
            self.sync.add(self.index[key], stamp_ns, (stamp_ns, msg))

    def note_rejected(self, key: tuple[str, str], stamp_ns: int) -> None:
        """A camera frame rejected on arrival: its set is counted under the frame's reason."""
        if key in self.index:
            self.rejected.append(stamp_ns)

    def add_set(self, *items: tuple[int, Any]) -> None:
        """A synchronised camera set, (stamp, msg) per camera input in `keys` order (from
        `ApproximateSync`): held until its radar settles."""
        stamp = max(s for s, _ in items)
        self._in_sequence(stamp)
        msgs = {k: m for k, (_, m) in zip(self.fast, items, strict=True)}
        stamps = {k: s for k, (s, _) in zip(self.fast, items, strict=True)}
        self.held.append((stamp, msgs, stamps))
        self._release()

    def flush(self, reason: str) -> None:
        """Release everything still waiting as drops under `reason`: the held sets and, once
        per set, the frames of sets that never completed; then start over."""
        for _ in self.held:
            self.on_drop(reason)
        for stamp in sorted(s for q in self.sync.queues for s in q):
            self._orphan(stamp, reason)
        self._in_sequence(None)
        self.sync.reset()
        self.held.clear()
        for lw in self.slow.values():
            lw.frames.clear()
        self.counted.clear()
        self.rejected.clear()
        self.sets = GapCounter()
        self.seen = []
        if reason != CLOCK_JUMP:
            self.guard.reset()

    @property
    def now_ns(self) -> int:
        """The newest camera stamp (as the guard accepted it: an outlier stepped back from
        no longer counts)."""
        return max((self.guard.last.get(k, 0) for k in self.fast), default=0)

    def waiting(self) -> int:
        """Camera sets held for their radar."""
        return len(self.held)

    def _orphan(self, stamp_ns: int, reason: str) -> None:
        """A camera frame that left without its set: count the set once."""
        if any(abs(stamp_ns - s) <= self.slop_ns for s in self.counted):
            return
        self.counted.append(stamp_ns)
        self._in_sequence(stamp_ns)
        if not any(abs(stamp_ns - s) <= self.slop_ns for s in self.rejected):
            self.on_drop(reason)

    def _in_sequence(self, stamp_ns: int | None) -> None:
        """A camera set was seen (complete or not; None: no more will be): sets missing in
        the sequence lost every camera frame before reaching the node (`lost_set`)."""
        if stamp_ns is not None:
            heapq.heappush(self.seen, stamp_ns)
        newest = max(self.seen, default=0)
        while self.seen and (stamp_ns is None or self.seen[0] < newest - SEQUENCE_LAG_NS):
            t = heapq.heappop(self.seen)
            if self.sets.last_ns is None or t > self.sets.last_ns:
                for _ in range(self.sets.add(t)):
                    self.on_drop("lost_set")

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

"""Sensor frames checked on arrival, per topic, before they enter any queue; no ROS here.

`Arrivals` is what a node's sensor callback calls first: the stamp against the node's clock
(`check_stamp`), then the frame itself (`images.decode`: encoding, sizes against `step` and
the data length, finite values, depth validity). A bad frame is counted by reason (the node's
`Drops`) and by topic, and never reaches the synchroniser, so the good frames around it form
their samples as if it had never been sent. Good frames are also watched for gaps in their
stamp sequence (`GapCounter`): frames lost before the node (middleware queue overflow, a
best-effort network) are counted per topic, as is the middleware's own message-lost count
where it reports one. `status_of` turns a node's counters into a diagnostic level and a
message that agree.
"""

from __future__ import annotations

import statistics
import threading
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from admn_ros.nodes.images import InputError, decode, drop_reason

NS = 1_000_000_000
GAP_INTERVALS = 16  # recent stamp intervals per topic; their median is the topic's period
GAP_MIN_INTERVALS = 4  # no gap is judged before the period is known
GAP_FACTOR = 1.5  # an interval longer than this many periods has lost frames ...
GAP_MAX_PERIODS = 100  # ... up to this many: longer is a pause or a clock step, not losses
INVALID_WINDOW = 30  # depth frames over which the invalid share is averaged
OK, WARN, ERROR = 0, 1, 2


def check_stamp(stamp_ns: int, now_ns: int, ahead_ns: int, behind_ns: int) -> None:
    """Raise `InputError('bad_stamp')` unless now - behind <= stamp <= now + ahead.
    `now_ns` 0 means the node has no time yet (simulated time before the first /clock)."""
    if now_ns <= 0:
        return
    if stamp_ns > now_ns + ahead_ns or stamp_ns < now_ns - behind_ns:
        raise InputError("bad_stamp", f"stamp {stamp_ns / NS:.3f} s is "
                                      f"{(stamp_ns - now_ns) / NS:+.3f} s from the node's clock "
                                      f"(accepted: -{behind_ns / NS:g} to +{ahead_ns / NS:g} s)")


class GapCounter:
    """Frames missing from one topic's stamp sequence, judged against its own period (the
    median of its recent intervals): an interval of k periods means k - 1 lost frames."""

    def __init__(self) -> None:
        self.last_ns: int | None = None
        self.intervals: deque[int] = deque(maxlen=GAP_INTERVALS)
        self.lost = 0

    def add(self, stamp_ns: int) -> int:
        """Record a good frame; returns how many frames were lost just before it."""
        last, self.last_ns = self.last_ns, stamp_ns
        if last is None or stamp_ns <= last:  # first frame, or the clock went back: start over
            if last is not None:
                self.intervals.clear()
            return 0
        dt = stamp_ns - last
        lost = 0
        if len(self.intervals) >= GAP_MIN_INTERVALS:
            period = statistics.median(self.intervals)
            if dt > GAP_MAX_PERIODS * period:  # the sensor paused or its clock stepped
                self.intervals.clear()
                return 0
            if dt > GAP_FACTOR * period:
                lost = max(0, round(dt / period) - 1)
        self.intervals.append(dt)
        self.lost += lost
        return lost


@dataclass
class TopicStats:
    """What arrived on one topic."""

    received: int = 0
    good: int = 0
    dropped: Counter = field(default_factory=Counter)
    gaps: GapCounter = field(default_factory=GapCounter)
    rmw_lost: int = 0  # the middleware's message-lost count, where it reports one
    invalid: deque = field(default_factory=lambda: deque(maxlen=INVALID_WINDOW))
    period_received: int = 0  # since the last diagnostics
    period_good: int = 0

    @property
    def lost(self) -> int:
        """Frames lost before the node: the larger of the two counts (the gaps include the
        middleware's losses when both see them)."""
        return max(self.gaps.lost, self.rmw_lost)


class Arrivals:
    """The arrival checks of one node's sensor topics.

    `topics`: (node, modality) -> topic name; `clock_ns()`: the node's clock (0 = no time
    yet); `drop(reason, text)`: the node's drop counter; `on_reject(key, stamp)` is told of
    each rejected frame (the synchroniser uses it to tell incomplete sets apart)."""

    def __init__(self, topics: dict[tuple[str, str], str], clock_ns: Callable[[], int],
                 drop: Callable[[str, str], None], ahead_s: float, behind_s: float,
                 max_invalid_share: float,
                 on_reject: Callable[[tuple[str, str], int], None] | None = None) -> None:
        self.topics = dict(topics)
        self.clock_ns, self.drop, self.on_reject = clock_ns, drop, on_reject
        self.ahead_ns, self.behind_ns = int(ahead_s * NS), int(behind_s * NS)
        self.max_invalid_share = max_invalid_share
        self.stats = {k: TopicStats() for k in self.topics}
        self._lock = threading.Lock()  # diagnostics may read from another thread

    def __call__(self, key: tuple[str, str], stamp_ns: int, msg) -> np.ndarray | None:
        """The decoded frame, or None when it was rejected (and counted)."""
        st = self.stats[key]
        with self._lock:
            st.received += 1
            st.period_received += 1
        try:
            check_stamp(stamp_ns, self.clock_ns(), self.ahead_ns, self.behind_ns)
            frame = decode(key[1], msg, self.max_invalid_share)
        except Exception as exc:  # any decoder error is this frame's fault, never the node's
            reason = drop_reason(exc)
            with self._lock:
                st.dropped[reason] += 1
            self.drop(reason, f"{self.topics[key]}: {exc}")
            if self.on_reject is not None:
                self.on_reject(key, stamp_ns)
            return None
        with self._lock:
            st.good += 1
            st.period_good += 1
            st.gaps.add(stamp_ns)
            if frame.invalid_share is not None:
                st.invalid.append(frame.invalid_share)
        return frame.array

    def message_lost(self, key: tuple[str, str], total: int) -> None:
        """The middleware's cumulative message-lost count of one subscription."""
        with self._lock:
            self.stats[key].rmw_lost = int(total)

    def lost(self) -> int:
        with self._lock:
            return sum(st.lost for st in self.stats.values())

    def values(self) -> dict[str, object]:
        """`received` (every frame taken, good or not); per topic: `topic.<name>` = received,
        good, lost and drops by reason; `depth_invalid.<name>` = mean share of no-reading
        pixels of the recent depth frames; `error` names the topics whose every frame since
        the last report was rejected."""
        out: dict[str, object] = {}
        silent_good = []
        with self._lock:
            out["received"] = sum(st.received for st in self.stats.values())
            for key, st in self.stats.items():
                name = self.topics[key]
                reasons = " ".join(f"{r}={n}" for r, n in sorted(st.dropped.items()))
                out[f"topic.{name}"] = (f"received={st.received} good={st.good} "
                                        f"lost={st.lost}" + (f" {reasons}" if reasons else ""))
                if st.invalid:
                    out[f"depth_invalid.{name}"] = round(float(np.mean(st.invalid)), 4)
                if st.period_received and not st.period_good:
                    silent_good.append(name)
                st.period_received = st.period_good = 0
            out["frames_lost"] = sum(st.lost for st in self.stats.values())
        if silent_good:
            out["error"] = f"every frame rejected on {', '.join(silent_good)}"
        return out


def status_of(values: dict[str, object], previous: dict[str, object] | None
              ) -> tuple[int, str]:
    """Diagnostic level and message from a node's cumulative counters and the previous
    report's: ERROR with `error` when set; WARN naming the drop reasons that grew since the
    previous report (and lost frames); OK otherwise."""
    if values.get("error"):
        return ERROR, str(values["error"])
    prev = previous or {}
    grew = []
    for k, v in values.items():
        if k.startswith("dropped.") or k == "frames_lost":
            delta = int(v) - int(prev.get(k, 0))
            if delta > 0:
                grew.append(f"{k.removeprefix('dropped.')} +{delta}")
    if grew:
        return WARN, "dropped since last report: " + ", ".join(sorted(grew))
    return OK, "ok"

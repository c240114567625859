"""A node's worker thread: a bounded job queue, freshness, and a loop that never dies; no ROS.

Callbacks take data in (`put`, a few microseconds); the worker computes. The queue has a bound
and a drop policy (the oldest job goes, as message_filters' queues do: `queue_full`). When a
job's turn comes and its sample is older than `max_age_ns` on the node's clock (or would be by
the time it is done while a newer one waits), it is dropped as `stale` instead of being
computed late (`max_age_ns` 0: offline, every job is computed).
Every job runs under a catch-all: an exception is counted as a drop under its own name
(`images.InputError` under its reason, anything else as `error_<ExceptionType>`) and the loop
goes on with the next job. `health()` gives the liveness and the age of the oldest queued job
for the node's diagnostics.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from admn_ros.nodes.images import drop_reason

J = TypeVar("J")
NS = 1_000_000_000
ERROR = 2  # diagnostic_msgs/DiagnosticStatus.ERROR
STEP_EMA = 0.2  # weight of the latest job in the usual job duration

WORKER_PARAMS = {  # the parameters of a node with a worker
    "max_age_s": ("freshness: a sample older than this when its turn comes is dropped as "
                  "`stale` (default two sensor periods); 0 = offline, every sample is kept",
                  0.0, 60.0),
    "max_queue": ("samples queued for the worker at most; beyond, the oldest is dropped "
                  "(`queue_full`)", 1, 100000),
    "stuck_s": ("a job waiting or running longer than this, or a dead worker, makes the "
                "diagnostics ERROR, s", 0.1, 3600.0),
    "torch_threads": ("torch threads of this process; 0 = the cores shared evenly among the "
                      "graph's torch processes", 0, 256),
    "torch_processes": ("processes of the graph that run torch (for torch_threads 0)", 1, 64),
}


def torch_threads(requested: int, processes: int, cores: int | None = None) -> int:
    """`requested`, or for 0 this process's share of the cores it may run on."""
    if requested:
        return requested
    cores = cores or len(os.sched_getaffinity(0))
    return max(1, cores // max(1, processes))


def set_torch_threads(requested: int, processes: int) -> int:
    """Set this process's torch intra-op threads (see `torch_threads`); returns the count."""
    import torch

    n = torch_threads(requested, processes)
    torch.set_num_threads(n)
    return n


@dataclass
class Health:
    """What the diagnostics report about a worker."""

    alive: bool
    queued: int
    oldest_s: float  # wall seconds the oldest queued job has waited (0 when none)
    busy_s: float  # wall seconds the job in progress has run (0 when idle)

    def stuck(self, stuck_s: float) -> bool:
        """Dead, or a job waiting or running longer than `stuck_s`."""
        return not self.alive or max(self.oldest_s, self.busy_s) > stuck_s

    def values(self) -> dict[str, object]:
        return {"worker_alive": int(self.alive), "queued": self.queued,
                "oldest_job_s": round(self.oldest_s, 3), "busy_s": round(self.busy_s, 3)}


class Worker(Generic[J]):
    """Runs `handle(job)` on a thread for the jobs `put` with their sample stamp (ns).

    `now_ns()` is the clock the stamps are on (the node's ROS clock: sim time on replay);
    `drop(reason, text)` counts a dropped job. Call `start()`, and `stop()` at shutdown.
    """

    def __init__(self, name: str, handle: Callable[[J], None], drop: Callable[[str, str], None],
                 now_ns: Callable[[], int], max_queue: int, max_age_ns: int) -> None:
        if max_queue < 1 or max_age_ns < 0:
            raise ValueError(f"worker {name}: expected max_queue >= 1 and max_age >= 0, got "
                             f"{max_queue} and {max_age_ns} ns")
        self.name, self.handle, self.drop, self.now_ns = name, handle, drop, now_ns
        self.max_queue, self.max_age_ns = max_queue, max_age_ns
        self.jobs: deque[tuple[int, float, J]] = deque()  # (stamp ns, wall time queued, job)
        self.cond = threading.Condition()
        self.running = False
        self.started_s = 0.0  # wall time the job in progress started; 0 when idle
        self.done = 0
        self.step_ns = 0.0  # usual duration of a job (running average), wall ns
        self.thread = threading.Thread(target=self.loop, name=name, daemon=True)

    def start(self) -> None:
        self.running = True
        self.thread.start()

    def put(self, stamp_ns: int, job: J) -> None:
        """Queue a job (from a callback); beyond the bound the oldest queued job is dropped."""
        with self.cond:
            self.jobs.append((stamp_ns, time.monotonic(), job))
            overflow = len(self.jobs) > self.max_queue
            if overflow:
                self.jobs.popleft()
            self.cond.notify()
        if overflow:
            self.drop("queue_full", f"{self.name}: more than {self.max_queue} jobs queued")

    def clear(self) -> int:
        """Forget every queued job (a deactivated node: nothing queued runs later); returns
        how many were forgotten."""
        with self.cond:
            n = len(self.jobs)
            self.jobs.clear()
            self.cond.notify_all()
        return n

    def loop(self) -> None:
        """The thread: run the queued jobs, oldest first, until `stop()`."""
        while True:
            with self.cond:
                while self.running and not self.jobs:
                    self.cond.wait()
                if not self.running:
                    return
            self.step()

    def step(self) -> bool:
        """Run the oldest queued job, if any (False when none was queued)."""
        with self.cond:
            if not self.jobs:
                return False
            stamp, _, job = self.jobs.popleft()
            self.started_s = time.monotonic()
        try:
            self.run_one(stamp, job)
        finally:
            with self.cond:
                self.started_s = 0.0
                self.done += 1
                self.cond.notify_all()
        return True

    def run_one(self, stamp: int, job: J) -> None:
        """Freshness, then the job under a catch-all (counted, never fatal).

        Stale: older than `max_age_ns` at its turn, or, while a newer job waits, so old that
        it would pass `max_age_ns` before a job of the usual duration is done (the newer one
        is then the better use of the time)."""
        age = self.now_ns() - stamp
        late = age + (self.step_ns if self.jobs else 0)
        if self.max_age_ns and late > self.max_age_ns:
            self.drop("stale", f"{self.name}: sample {age / 1e6:.0f} ms old at its turn, "
                               f"{late / 1e6:.0f} ms when done (limit "
                               f"{self.max_age_ns / 1e6:.0f} ms)")
            return
        t0 = time.monotonic()
        try:
            self.handle(job)
        except Exception as exc:  # one bad job must not end the worker
            self.drop(drop_reason(exc), f"{self.name}: {type(exc).__name__}: {exc}")
        ns = (time.monotonic() - t0) * NS
        self.step_ns = ns if not self.step_ns else STEP_EMA * ns + (1 - STEP_EMA) * self.step_ns

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until every queued job is done (True) or the timeout (False); for tests and
        shutdown."""
        with self.cond:
            return self.cond.wait_for(lambda: not self.jobs and not self.started_s, timeout_s)

    def health(self) -> Health:
        now = time.monotonic()
        with self.cond:
            oldest = now - self.jobs[0][1] if self.jobs else 0.0
            busy = now - self.started_s if self.started_s else 0.0
            return Health(self.thread.is_alive(), len(self.jobs), oldest, busy)

    def stop(self, timeout_s: float = 5.0) -> None:
        with self.cond:
            self.running = False
            self.cond.notify_all()
        if self.thread.is_alive():
            self.thread.join(timeout=timeout_s)


def worker_status(worker: Worker, stuck_s: float) -> tuple[int, str, dict[str, object]]:
    """(level, message, values) of a worker for `common.Diagnostics`: ERROR when stuck."""
    h = worker.health()
    if not h.alive:
        return ERROR, f"{worker.name} worker is dead", h.values()
    if h.stuck(stuck_s):
        return ERROR, (f"{worker.name} worker stuck: oldest job {h.oldest_s:.1f} s, current "
                       f"job {h.busy_s:.1f} s (limit {stuck_s:g} s)"), h.values()
    return 0, "", h.values()

"""Bad input never costs good data (no ROS spinning): arrival checks per malformed kind,
REP 118 depth, lone stamp outliers vs clock jumps, every camera set accounted for, lost-frame
gaps, diagnostic levels, the soak verdict."""

from __future__ import annotations

import numpy as np
import pytest

from admn_ros.nodes.arrival import ERROR, OK, WARN, Arrivals, GapCounter, check_stamp, status_of
from admn_ros.nodes.fuzz import KINDS, expected_reason, malformed_fields
from admn_ros.nodes.images import InputError, decode
from admn_ros.nodes.soak import verdict
from admn_ros.nodes.sync import SampleSync

MS = 1_000_000
S = 1_000_000_000
NOW = 1_700_000_000 * S  # the node's clock


class Msg:
    """A sensor_msgs/Image stand-in (fields only)."""

    def __init__(self, height, width, encoding, step, data, is_bigendian=0):
        self.height, self.width, self.encoding = height, width, encoding
        self.step, self.data, self.is_bigendian = step, data, is_bigendian


def image(arr: np.ndarray, encoding: str) -> Msg:
    ch = arr.shape[2] if arr.ndim == 3 else 1
    return Msg(arr.shape[0], arr.shape[1], encoding, arr.shape[1] * ch * arr.itemsize,
               arr.tobytes())


GOOD = {"rgb": image(np.full((6, 8, 3), 90, np.uint8), "rgb8"),
        "depth": image(np.full((6, 8), 1500, np.uint16), "16UC1"),
        "radar": image(np.full((6, 8), 3.0, np.float32), "32FC1")}
TOPICS = {(n, m): f"/{n}/{m}" for n in ("n1", "n2") for m in ("rgb", "depth", "radar")}


def arrivals(drops: list, rejected: list | None = None) -> Arrivals:
    return Arrivals(TOPICS, lambda: NOW, lambda reason, text: drops.append(reason),
                    ahead_s=5.0, behind_s=600.0, max_invalid_share=0.99,
                    on_reject=None if rejected is None else
                    lambda key, stamp: rejected.append((key, stamp)))


# ------------------------------------------------------------------ arrival checks
@pytest.mark.parametrize("modality", ["rgb", "depth", "radar"])
@pytest.mark.parametrize("kind", KINDS)
def test_each_malformed_kind_is_rejected_on_arrival_with_its_reason(kind, modality):
    drops = []
    arr = arrivals(drops)
    fields, end_of_time = malformed_fields(kind, modality)
    stamp = (2**31 - 1) * S if end_of_time else NOW
    assert arr((("n1", modality)), stamp, Msg(**fields)) is None
    assert drops == [expected_reason(kind, modality)]
    st = arr.stats[("n1", modality)]
    assert st.received == 1 and st.good == 0 and dict(st.dropped) == {drops[0]: 1}
    values = arr.values()
    assert f"{drops[0]}=1" in values[f"topic./n1/{modality}"]
    assert "/n1/" + modality in values["error"]  # every frame of that topic was bad


def test_good_frames_pass_decoded_and_are_counted_per_topic():
    drops = []
    arr = arrivals(drops)
    out = arr(("n2", "rgb"), NOW, GOOD["rgb"])
    assert out.shape == (6, 8, 3) and drops == []
    assert arr.stats[("n2", "rgb")].good == 1
    assert "error" not in arr.values()


def test_stamps_are_judged_against_the_nodes_clock():
    check_stamp(NOW + 4 * S, NOW, 5 * S, 600 * S)
    check_stamp(123, 0, 5 * S, 600 * S)  # no clock yet (simulated time before /clock)
    for stamp in (NOW + 6 * S, NOW - 601 * S, 0):
        with pytest.raises(InputError) as e:
            check_stamp(stamp, NOW, 5 * S, 600 * S)
        assert e.value.reason == "bad_stamp"


# ------------------------------------------------------------------ REP 118 depth
def test_rep118_depth_invalid_pixels_become_no_reading_and_are_reported():
    m = np.full((10, 10), 2.0, np.float32)
    m[0, :4] = np.nan
    m[1, :3] = np.inf  # too far
    m[2, :3] = -np.inf  # too close
    frame = decode("depth", image(m, "32FC1"), 0.99)
    assert frame.array.dtype == np.uint16 and frame.array[5, 5] == 2000
    assert (frame.array[:3, :3] == 0).all() and frame.invalid_share == pytest.approx(0.10)
    mm = np.full((10, 10), 1200, np.uint16)
    mm[:, :2] = 0
    frame = decode("depth", image(mm, "16UC1"), 0.99)
    assert frame.invalid_share == pytest.approx(0.2) and frame.array[0, 5] == 1200
    drops = []
    arr = arrivals(drops)
    arr(("n1", "depth"), NOW, image(m, "32FC1"))
    arr(("n1", "depth"), NOW + 67 * MS, image(mm, "16UC1"))
    assert drops == [] and arrivals([]).values().get("depth_invalid./n1/depth") is None
    assert arr.values()["depth_invalid./n1/depth"] == pytest.approx(0.15)


def test_rep118_depth_all_invalid_is_rejected_with_its_reason():
    with pytest.raises(InputError) as e:
        decode("depth", image(np.full((4, 4), np.nan, np.float32), "32FC1"), 0.99)
    assert e.value.reason == "nan_depth"
    with pytest.raises(InputError) as e:
        decode("depth", image(np.zeros((4, 4), np.uint16), "16UC1"), 0.99)
    assert e.value.reason == "empty_depth"


# ------------------------------------------------------------------ sync: outliers, jumps
CAMERAS = [("n1", "rgb"), ("n2", "rgb")]
KEYS = [*CAMERAS, ("n1", "radar")]


def feed(sync: SampleSync, frames: list[tuple[tuple[str, str], int]], check=None) -> None:
    for key, t in frames:
        frame = (key, t) if check is None else check(key, t)
        if frame is not None:
            sync.add(key, t, frame)


def stream(t0: int, sets: int) -> list:
    """Camera sets at 15 Hz (n2 3 ms after n1), radar at 4 Hz, in stamp order."""
    frames = [(k, t0 + i * 67 * MS + j * 3 * MS) for i in range(sets)
              for j, k in enumerate(CAMERAS)]
    frames += [(("n1", "radar"), t0 + 10 * MS + i * 250 * MS) for i in range(sets * 67 // 250
                                                                            + 2)]
    return sorted(frames, key=lambda f: f[1])


def make_sync(samples, drops) -> SampleSync:
    return SampleSync(KEYS, ("radar",), 10, 0.04, 0.6, 0.22, samples.append, drops.append)


def test_a_single_future_stamp_does_not_reset_the_synchroniser():
    samples, drops = [], []
    sync = make_sync(samples, drops)
    frames = stream(NOW, 30)
    feed(sync, frames[:20])
    before = len(samples)
    sync.add(("n1", "rgb"), (2**31 - 1) * S, "end of time")  # far ahead of every topic
    feed(sync, frames[20:])
    assert sync.guard.jumps == 0 and drops.count("bad_stamp") == 1
    assert len(samples) > before and len(samples) >= 26
    assert "clock_backwards" not in drops


def test_an_outlier_taken_before_any_other_topic_is_recovered_from():
    """With no clock yet and no other topic to compare with, a far-future first frame is
    taken; its topic's next frames step back alone, and it is followed again."""
    samples, drops = [], []
    sync = make_sync(samples, drops)
    sync.add(("n2", "rgb"), (2**31 - 1) * S, "end of time")
    frames = stream(NOW, 40)
    feed(sync, frames)
    sync.flush("unfinished")
    assert sync.guard.jumps == 0 and len(samples) >= 35
    assert len(samples) + len(drops) <= 40 + 1  # at most the outlier itself counted


def test_the_fusion_buffer_recovers_from_an_early_outlier_too():
    from admn_ros.nodes.samples import StampedBuffer

    buf, reference = (StampedBuffer(KEYS, ("radar",), 40 * MS, 600 * MS, 220 * MS)
                      for _ in range(2))
    buf.add(("n2", "rgb"), (2**31 - 1) * S, "end of time")
    for key, t in stream(NOW, 10):
        buf.add(key, t, (key, t))
        reference.add(key, t, (key, t))
    assert buf.now_ns == reference.now_ns  # the outlier no longer counts as the newest
    for i in range(4, 9):  # after the frames its topic stepped back with
        t = NOW + i * 67 * MS + 3 * MS
        assert buf.assemble(t).stamps == reference.assemble(t).stamps


def test_a_lone_step_back_is_rejected_and_its_topic_goes_on():
    samples, drops = [], []
    sync = make_sync(samples, drops)
    frames = stream(NOW, 30)
    feed(sync, frames[:20])
    sync.add(("n2", "rgb"), NOW, "an old frame again")
    feed(sync, frames[20:])
    assert sync.guard.jumps == 0 and drops.count("bad_stamp") == 1
    reference = []
    feed(make_sync(reference, []), frames)
    assert len(samples) == len(reference)


def test_a_looping_bag_resets_the_synchroniser_and_samples_go_on():
    samples, drops = [], []
    sync = make_sync(samples, drops)
    feed(sync, stream(NOW, 30))
    first = len(samples)
    feed(sync, stream(NOW, 30))  # the bag starts again: every topic goes back
    assert sync.guard.jumps == 1
    assert len(samples) == 2 * first  # the frames of the new timeline all count
    assert set(drops) <= {"clock_backwards"}


def test_malformed_frames_between_good_ones_cost_no_sample():
    """Fuzzed frames (every kind, stamped like the good ones) interleaved with a clean
    stream: rejected on arrival, every good set still becomes a sample."""
    samples, drops = [], []
    sync = make_sync(samples, drops)
    check = arrivals(drops, rejected=[])
    clean = stream(NOW, 30)
    reference = []
    feed(make_sync(reference, []), clean)
    fuzzed = []
    for i, (key, t) in enumerate(clean):
        fuzzed.append((key, t, GOOD[key[1]]))
        kind = KINDS[i % len(KINDS)]
        fields, end_of_time = malformed_fields(kind, key[1])
        fuzzed.append((key, (2**31 - 1) * S if end_of_time else t + MS, Msg(**fields)))
    for key, t, msg in fuzzed:
        frame = check(key, t, msg)
        if frame is not None:
            sync.add(key, t, frame)
    assert len(samples) == len(reference) >= 28
    assert [s.stamp_ns for s in samples] == [s.stamp_ns for s in reference]
    assert {"bad_encoding", "bad_size", "nan_radar", "bad_stamp"} <= set(drops)


def test_every_camera_set_ends_as_a_sample_or_a_counted_drop():
    """Frames lost (or rejected) leave incomplete sets: each is counted once, and the sets
    still waiting when the input stops are released by `flush`."""
    samples, drops = [], []
    sync = make_sync(samples, drops)
    frames = stream(NOW, 60)
    lost = {t for k, t in frames if k == ("n2", "rgb")}
    lost = set(sorted(lost)[5:50:7])  # 7 sets lose their n2 frame
    feed(sync, [(k, t) for k, t in frames if t not in lost])
    sync.flush("unfinished")
    assert drops.count("incomplete_set") == len(lost)
    assert len(samples) + len(drops) == 60 and sync.waiting() == 0


@pytest.mark.parametrize("loss", [0.05, 0.2, 0.5])
def test_with_frames_and_whole_sets_lost_every_set_is_counted_exactly_once(loss):
    keys = [(n, m) for n in ("n1", "n2", "n3") for m in ("rgb", "depth", "radar")]
    cams = [k for k in keys if k[1] != "radar"]
    rng = np.random.default_rng(7)
    sets = 200
    frames = [(k, NOW + i * 67 * MS + int(rng.integers(0, 4)) * MS)
              for i in range(sets) for k in cams]
    frames += [((n, "radar"), NOW + i * 250 * MS + int(rng.integers(0, 30)) * MS)
               for n in ("n1", "n2", "n3") for i in range(sets * 67 // 250 + 2)]
    gone = set(rng.choice(np.arange(1, sets - 1), 10, replace=False).tolist())  # whole sets
    kept = [(k, t) for k, t in sorted(frames, key=lambda f: f[1]) if rng.random() > loss
            and not (k[1] != "radar" and (t - NOW) // (67 * MS) in gone)]
    samples, drops = [], []
    sync = SampleSync(keys, ("radar",), 10, 0.04, 0.6, 0.22, samples.append, drops.append)
    feed(sync, kept)
    sync.flush("unfinished")
    assert len(samples) + len(drops) == sets
    assert drops.count("lost_set") >= len(gone)


def test_a_rejected_frame_counts_its_set_once_under_its_own_reason():
    samples, drops = [], []
    sync = make_sync(samples, drops)
    check = arrivals(drops, rejected=[])
    check.on_reject = sync.note_rejected
    for i, (key, t) in enumerate(stream(NOW, 40)):
        msg = GOOD[key[1]]
        if key == ("n1", "rgb") and i % 10 == 4:
            msg = Msg(**malformed_fields("short_data", "rgb")[0])
        frame = check(key, t, msg)
        if frame is not None:
            sync.add(key, t, frame)
    sync.flush("unfinished")
    assert "incomplete_set" not in drops
    assert len(samples) + len(drops) == 40


# ------------------------------------------------------------------ lost frames
def test_gaps_in_a_topics_stamps_count_lost_frames():
    gaps = GapCounter()
    stamps = [i * 67 * MS for i in range(40) if i not in (10, 20, 21, 22)]
    assert sum(gaps.add(t) for t in stamps) == 4 and gaps.lost == 4
    assert gaps.add(0) == 0  # clock went back: start over, nothing counted
    for i in range(1, 6):
        gaps.add(i * 67 * MS)
    assert gaps.add(3600 * S) == 0  # a pause (or a clock step), not an hour of lost frames
    jitter = np.random.default_rng(0).integers(-4, 5, 50) * MS
    steady = GapCounter()
    assert sum(steady.add(10 * S + i * 250 * MS + int(j)) for i, j in enumerate(jitter)) == 0


def test_middleware_lost_count_and_gaps_give_the_topics_lost_frames():
    arr = arrivals([])
    for i in (0, 1, 2, 3, 4, 5, 8):
        arr(("n1", "rgb"), NOW + i * 67 * MS, GOOD["rgb"])
    assert arr.lost() == 2
    arr.message_lost(("n1", "rgb"), 5)
    assert arr.lost() == 5 and arr.values()["frames_lost"] == 5


# ------------------------------------------------------------------ diagnostics, soak
def test_diagnostic_level_agrees_with_its_message():
    assert status_of({"dropped.bad_size": 2}, {"dropped.bad_size": 2}) == (OK, "ok")
    level, msg = status_of({"dropped.bad_size": 3, "frames_lost": 1},
                           {"dropped.bad_size": 2})
    assert level == WARN and "bad_size +1" in msg and "frames_lost +1" in msg
    level, msg = status_of({"error": "every frame rejected on /x"}, None)
    assert level == ERROR and "/x" in msg


def test_summary_reads_the_per_topic_counts():
    from admn_ros.nodes.summary import topic_counts

    arr = arrivals([])
    arr(("n1", "depth"), NOW, GOOD["depth"])
    arr(("n1", "depth"), NOW + S, Msg(**malformed_fields("huge", "depth")[0]))
    topics = topic_counts({k: str(v) for k, v in arr.values().items()})
    assert topics["/n1/depth"] == {"received": 2, "good": 1, "lost": 0, "bad_size": 1,
                                   "depth_invalid": 0.0}
    assert topics["/n2/rgb"] == {"received": 0, "good": 0, "lost": 0}


def row(t, rss, alive=True, lat=20.0):
    return {"t_s": t, "nodes": {"admn_fusion": {"alive": alive, "rss_kb": rss,
                                                "latency_ms_p95": lat, "dropped": {}}}}


def test_soak_verdict_flat_memory_lost_nodes_and_latency():
    flat = [row(t, 1000 + (t % 3)) for t in range(0, 100, 10)]
    v = verdict(flat, 10, 0.05)
    assert v["ok"] and v["nodes"]["admn_fusion"]["flat"] and not v["lost_nodes"]
    assert v["latency_ms_p95_first_tenth"] == 20.0
    growing = [row(t, 1000 + 10 * t) for t in range(0, 100, 10)]
    assert not verdict(growing, 10, 0.05)["ok"]
    lost = [*flat[:-1], row(90, None, alive=False)]
    v = verdict(lost, 10, 0.05)
    assert not v["ok"] and v["lost_nodes"] == ["admn_fusion"]


# ------------------------------------------------------------------ bad files: one clear line
def test_unusable_weights_give_one_clear_line(tmp_path):
    import shutil
    from pathlib import Path

    import torch

    from admn_ros.nodes.models import WeightsError, load_admn

    root = Path(__file__).resolve().parents[1] / "models"
    if not (root / "admn_demo.pt").exists():
        pytest.skip("models/ has no default weights (make train writes them)")
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("not a checkpoint")
    for f in root.glob("admn_demo*.pt"):  # the checkpoint and its shards, one tensor reshaped
        shutil.copy(f, tmp_path / f.name)
    ck = torch.load(tmp_path / "admn_demo.pt", weights_only=True)
    name = next(iter(ck["state_dict"]))
    ck["state_dict"][name] = torch.zeros(3, 3)
    torch.save(ck, tmp_path / "admn_demo.pt")
    for path, why in ((garbage, "cannot be unpickled"), (tmp_path / "admn_demo.pt", name)):
        with pytest.raises(WeightsError) as e:
            load_admn(str(path))
        assert len(str(e.value).splitlines()) == 1 and why in str(e.value)

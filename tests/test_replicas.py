"""Model replicas explaining side by side on a CPU (pipeline/replicas.py and the local engine's use of it)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gradcam.apps.cli import main
from gradcam.io.images import find_images
from gradcam.io.models import LoadedModel, Preprocessing
from gradcam.pipeline import replicas
from gradcam.pipeline.local import Runner
from gradcam.pipeline.options import RunOptions, UsageError
from gradcam.pipeline.records import PhotoRecord, full_map
from test_model_state import assert_same, snapshot, varied_model
from tiny_models import TinyCNN

# the count --------------------------------------------------------------------------------------------------


def test_one_replica_per_cpu_thread_for_a_small_model_and_one_elsewhere(monkeypatch):
    model = TinyCNN()
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    assert replicas.replica_count(model, "cpu", None, batches=10) == 4
    assert replicas.replica_count(model, "cpu", None, batches=3) == 3  # no idle copies
    assert replicas.replica_count(model, "cuda:0", None, batches=10) == 1
    assert replicas.replica_count(model, "cuda:0", 3, batches=10) == 3  # asked for
    monkeypatch.setattr(replicas, "REPLICA_BYTES", replicas.model_bytes(model) - 1)
    assert replicas.replica_count(model, "cpu", None, batches=10) == 1  # too large to copy


def test_replicas_are_independent_copies_and_an_uncopyable_model_runs_alone():
    torch.manual_seed(0)
    model = TinyCNN().eval()
    one, two = replicas.replicate(model, 2)
    assert one is model and two is not model
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(model.parameters(), two.parameters(), strict=True))
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(model(x), two(x), rtol=0, atol=0)
    model.lock = threading.Lock()  # deepcopy cannot copy a lock
    assert replicas.replicate(model, 3) == [model]


def test_torch_threads_are_restored_also_after_an_error():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="boom"), replicas.torch_threads(1):
        assert torch.get_num_threads() == 1
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before


# side by side -----------------------------------------------------------------------------------------------


def batches_of(count: int):
    queue = iter(range(count))
    return lambda: next(queue, None)


def test_replicas_run_at_once_and_every_batch_is_explained_once():
    both_running = threading.Barrier(2, timeout=20)  # broken (an error) unless the two explain at once
    taken: list[tuple[str, int]] = []

    def replica(name: str):
        def explain(batch: int):
            if batch < 2:
                both_running.wait()
            taken.append((name, batch))
            return lambda: None

        return explain

    replicas.explain_side_by_side(batches_of(9), [replica("a"), replica("b")], tick=lambda: None)
    assert sorted(batch for _, batch in taken) == list(range(9))
    assert {name for name, _ in taken} == {"a", "b"}


def test_a_replica_waits_for_its_previous_batch_before_explaining_the_one_after():
    events: list[str] = []

    def explain(batch: int):
        events.append(f"explain {batch}")
        return lambda: events.append(f"written {batch}")

    replicas.explain_side_by_side(batches_of(4), [explain], tick=lambda: None)
    assert events == ["explain 0", "explain 1", "written 0", "explain 2", "written 1", "explain 3", "written 2"]


def test_an_error_in_one_replica_stops_the_others_and_is_raised():
    taken: list[int] = []

    def explain(batch: int):
        taken.append(batch)
        if batch == 3:
            raise ValueError("bad batch")
        time.sleep(0.05)
        return lambda: None

    with pytest.raises(ValueError, match="bad batch"):
        replicas.explain_side_by_side(batches_of(100), [explain, explain], tick=lambda: None)
    assert len(taken) <= 6  # the other replica finished the batch it had, and took no more
    assert not [t for t in threading.enumerate() if t.name.startswith("gradcam-replica")]


def test_a_ctrl_c_lets_each_replica_finish_its_batch_and_take_no_more():
    taken: list[int] = []
    finished: list[int] = []

    def explain(batch: int):
        taken.append(batch)
        time.sleep(0.3)
        finished.append(batch)
        return lambda: None

    def tick():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        replicas.explain_side_by_side(batches_of(100), [explain, explain], tick)
    assert sorted(taken) == sorted(finished) and len(taken) <= 4
    assert not [t for t in threading.enumerate() if t.name.startswith("gradcam-replica")]


# the local engine -------------------------------------------------------------------------------------------


def explain_cli(*argv: str) -> int:
    return main(["explain", *argv, "--quiet"])


def manifest(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def test_two_replicas_write_what_one_model_writes(twelve_photos, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert explain_cli(str(twelve_photos), "--out", str(one), "--batch-size", "3", "--replicas", "1") == 0
    assert explain_cli(str(twelve_photos), "--out", str(two), "--batch-size", "3", "--replicas", "2") == 0
    first, second = manifest(one), manifest(two)
    assert first["layer"] == second["layer"] == "bn2" and first["summary"] == second["summary"]
    for a, b in zip(first["images"], second["images"], strict=True):
        assert a["path"] == b["path"] and a["status"] == b["status"] == "ok"
        # one PyTorch thread or two: the same classes, probabilities a rounding apart (nearly tied low
        # classes may swap places, so each class is compared by its index)
        assert a["predictions"][0]["index"] == b["predictions"][0]["index"]
        first = {p["index"]: p["probability"] for p in a["predictions"]}
        for p in b["predictions"]:
            assert p["index"] not in first or abs(first[p["index"]] - p["probability"]) < 1e-4
        maps = [full_map(PhotoRecord.from_json(entry)).numpy() for entry in (a, b)]
        np.testing.assert_allclose(*maps, atol=2e-3)
        pictures = [np.asarray(Image.open(entry["targets"][0]["files"]["overlay"]), dtype=int) for entry in (a, b)]
        assert np.abs(pictures[0] - pictures[1]).mean() < 1.0


def tiny_bundle(model: torch.nn.Module) -> LoadedModel:
    return LoadedModel("tiny", model, Preprocessing(resize=32, crop=(32, 32)), None, None, "random")


def test_the_users_model_and_pytorchs_threads_are_as_they_were_after_a_run(twelve_photos, tmp_path):
    model = varied_model()
    before, threads = snapshot(model), torch.get_num_threads()
    options = RunOptions(out=tmp_path / "out", batch_size=2, workers=0, replicas=2)
    result = Runner(tiny_bundle(model), find_images([str(twelve_photos)]), options).run()
    assert result.failed == 0 and len(result.entries) == 12
    assert_same(before, snapshot(model))
    assert torch.get_num_threads() == threads


def test_an_error_in_a_replica_ends_the_run_with_its_message_and_restores_the_threads(twelve_photos, tmp_path):
    threads = torch.get_num_threads()
    options = RunOptions(out=tmp_path / "out", batch_size=2, replicas=2, layer="features.nowhere")
    with pytest.raises(UsageError, match="nowhere"):
        Runner(tiny_bundle(TinyCNN().eval()), find_images([str(twelve_photos)]), options).run()
    assert torch.get_num_threads() == threads
    assert not [t for t in threading.enumerate() if t.name.startswith("gradcam-replica")]


def test_replicas_is_checked_on_the_command_line(twelve_photos, tmp_path, capsys):
    assert explain_cli(str(twelve_photos), "--out", str(tmp_path / "out"), "--replicas", "0") == 2
    assert "--replicas 0" in capsys.readouterr().err


def test_writer_threads_take_the_cores_a_single_model_leaves(monkeypatch):
    from gradcam.pipeline import replicas as local  # the thread counts live beside the replicas since #25

    monkeypatch.setattr(local.os, "sched_getaffinity", lambda _: set(range(16)), raising=False)
    assert local.writer_threads(workers=8, replicas=1) == 7  # a GPU run: 16 cores, 8 decoding, the main thread
    assert local.writer_threads(workers=2, replicas=2) == local.WRITER_THREADS  # the replicas use every core
    monkeypatch.setattr(local.os, "sched_getaffinity", lambda _: set(range(64)), raising=False)
    assert local.writer_threads(workers=2, replicas=1) == local.MAX_WRITER_THREADS
    monkeypatch.setattr(local.os, "sched_getaffinity", lambda _: {0, 1}, raising=False)
    assert local.writer_threads(workers=2, replicas=1) == local.WRITER_THREADS  # never fewer than two


def test_an_interrupt_inside_a_wait_still_waits_for_the_replicas(monkeypatch):
    """Ctrl-C ended 4 of 13 runs with "terminate called without an active exception" (exit 134): a
    KeyboardInterrupt landing inside Thread.join() leaves CPython's thread marked stopped while it still runs,
    so the replica was still inside a torch operation at exit. Simulated here: join() marks the thread stopped
    and raises; explain_side_by_side must not return before every replica has finished its batch."""
    from gradcam.pipeline.replicas import explain_side_by_side

    real_join = threading.Thread.join

    def corrupted_join(self, timeout=None):  # noqa: ANN001
        if self.name.startswith("gradcam-replica") and threading.current_thread() is threading.main_thread():
            self._is_stopped = True  # what an interrupted _wait_for_tstate_lock can leave behind
            raise KeyboardInterrupt
        return real_join(self, timeout)

    monkeypatch.setattr(threading.Thread, "join", corrupted_join)
    finished = []
    interrupts = iter([True])

    def replica(batch):
        time.sleep(0.3)
        finished.append(batch)
        return lambda: None

    def tick():
        if next(interrupts, False):
            raise KeyboardInterrupt

    batches = iter([[0], [1]])
    with pytest.raises(KeyboardInterrupt):
        explain_side_by_side(lambda: next(batches, None), [replica, replica], tick)
    assert sorted(finished) == [[0], [1]]  # both batches in hand were finished before it returned

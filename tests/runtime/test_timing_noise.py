"""auto's timing under load: the fastest run kept, a ranking within the noise timed again and, if it stays
a tie, said; the load average recorded and said. time_variants is replaced by a scripted clock."""

import pytest

from segrt.manifest import Artifact, Manifest
from segrt.runtime import here


def manifest():
    return Manifest(name="t", classes=["a", "b"], mean=[0.5] * 3, std=[0.25] * 3, channels=3, size_multiple=1,
                    input_size=[32, 32])


def arts():
    return [Artifact(file="a.onnx", kind="onnx", sha256="1" * 64), Artifact(file="b.onnx", kind="onnx",
                                                                            precision="int8", sha256="2" * 64)]


def scripted(monkeypatch, answers, load=0.0):
    calls = []

    def fake(folder, m, arts, hw, rounds=3, runs=3, spread=None):
        calls.append(([a.name for a in arts], rounds))
        ms, sp = answers[len(calls) - 1]
        if spread is not None:
            spread.update(sp)
        return {a.name: ms[a.name] for a in arts}

    monkeypatch.setattr(here, "time_variants", fake)
    monkeypatch.setattr(here.os, "getloadavg", lambda: (load, load, load))
    return calls


def test_a_clear_ranking_is_timed_once(monkeypatch, tmp_path):
    calls = scripted(monkeypatch, [({"a.onnx": 20.0, "b.onnx": 10.0}, {"a.onnx": 1.01, "b.onnx": 1.01})])
    ms, cached, note = here.measure_here(tmp_path, manifest(), arts())
    assert ms == {"a.onnx": 20.0, "b.onnx": 10.0} and not cached and note == "" and len(calls) == 1


def test_a_close_call_is_timed_again_and_a_tie_said(monkeypatch, tmp_path):
    calls = scripted(monkeypatch, [({"a.onnx": 10.0, "b.onnx": 10.2}, {"a.onnx": 1.02, "b.onnx": 1.02}),
                                   ({"a.onnx": 10.1, "b.onnx": 10.1}, {"a.onnx": 1.01, "b.onnx": 1.01})])
    ms, _, note = here.measure_here(tmp_path, manifest(), arts(), rounds=3)
    assert calls[1] == (["a.onnx", "b.onnx"], 6)  # the two, twice as long
    assert "within the noise of each other" in note and ms["a.onnx"] == 10.0


def test_a_close_call_that_separates_is_not_said(monkeypatch, tmp_path):
    scripted(monkeypatch, [({"a.onnx": 10.0, "b.onnx": 10.2}, {"a.onnx": 1.02, "b.onnx": 1.02}),
                           ({"a.onnx": 12.0, "b.onnx": 9.0}, {"a.onnx": 1.01, "b.onnx": 1.01})])
    ms, _, note = here.measure_here(tmp_path, manifest(), arts())
    assert note == "" and ms == {"a.onnx": 10.0, "b.onnx": 9.0}  # the fastest run of each is kept


def test_the_load_is_recorded_and_said(monkeypatch, tmp_path):
    scripted(monkeypatch, [({"a.onnx": 20.0, "b.onnx": 10.0}, {"a.onnx": 1.3, "b.onnx": 1.3})], load=3.2)
    _, _, note = here.measure_here(tmp_path, manifest(), arts())
    assert "timed under load (load average 3.2" in note
    _, cached, again = here.measure_here(tmp_path, manifest(), arts())
    assert cached and again == note  # kept with the speeds


@pytest.fixture(autouse=True)
def private_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("SEGRT_CACHE_DIR", str(tmp_path / "cache"))

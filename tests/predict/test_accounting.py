"""predict's CPU accounting: every stage present, and the stages with the rest adding up to the process's
CPU time; each thread's own counter summed independently agrees within 5%."""

import numpy as np
import pytest
from PIL import Image
from synthetic import tiny_export

from segrt.predict.accounting import STAGES, Ledger
from segrt.predict.options import PredictOptions
from segrt.predict.run import run_predict
from segrt.predict.summary import format_summary


def test_the_stages_add_up_to_the_process_cpu_time(tmp_path):
    export = tiny_export(tmp_path / "e", input_size=(64, 64))
    (tmp_path / "in").mkdir()
    rng = np.random.default_rng(0)
    for i in range(24):
        Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(tmp_path / "in" / f"p{i}.jpg")
    s = run_predict([str(tmp_path / "in")], export, provider="cpu", log=lambda m: None,
                    opts=PredictOptions(out=tmp_path / "out", batch_size=4, progress=False))
    cpu, per = s["cpu"], s["cpu"]["core_ms_per_image"]
    assert cpu["images"] == 24 and set(STAGES) <= set(per)
    assert all(per[k] > 0 for k in ("read", "decode", "resize", "to_tensor", "inference", "to_mask", "encode",
                                    "write"))
    parts = sum(v for k, v in per.items() if k != "total")
    assert parts == pytest.approx(per["total"], abs=0.01 * len(per))  # stages + rest = the process, by construction
    if cpu["threads_s"] is None:
        pytest.skip("no /proc/self/task here: the threads' own counters cannot be read")
    assert cpu["threads_s"] == pytest.approx(cpu["process_s"], rel=0.05)  # the split is sound
    assert per["rest"] >= -0.05 * per["total"]
    assert "CPU per image (core-ms): read " in format_summary(s)


def test_a_thread_that_is_not_segrt_s_counts_as_the_engine():
    import threading
    import time

    def spin(seconds):
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass

    ledger, spun, done = Ledger(), threading.Event(), threading.Event()
    ledger.start()

    def engine():  # like ONNX Runtime's pool: works, then stays alive
        spin(0.05)
        spun.set()
        done.wait()

    t = threading.Thread(target=engine)
    t.start()
    spun.wait()
    with ledger.stage("decode"):
        spin(0.03)
    out = ledger.finish(1)
    done.set()
    t.join()
    if out["threads_s"] is None:
        pytest.skip("no /proc/self/task here")
    assert out["core_ms_per_image"]["decode"] == pytest.approx(30, abs=5)
    assert out["engine_threads_s"] == pytest.approx(0.05, abs=0.01)
    assert out["core_ms_per_image"]["inference"] == pytest.approx(50, abs=10)

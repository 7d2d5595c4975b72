"""Beyond one process: --shard I/N, the Ray Data engine (a local Ray instance with 2 CPUs), and the
Triton model repository (config.pbtxt parsed with Triton's own model-config schema)."""

import json
import py_compile
import shutil
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import PETS, ROOT

from segrt.cli import main
from segrt.errors import SegrtError
from segrt.predict.inputs import gather_inputs, parse_shard, select_shard

pytestmark = pytest.mark.slow


def predict_cli(*args):
    return CliRunner().invoke(main, ["predict", *map(str, args)])


@pytest.fixture
def twenty(tmp_path):
    """20 real photos and one broken file."""
    src = tmp_path / "in"
    src.mkdir()
    for p in sorted((PETS / "images").glob("*.jpg"))[:20]:
        shutil.copy(p, src)
    (src / "broken.jpg").write_bytes(b"not a jpeg")
    return src


def test_shards_are_disjoint_complete_and_stable(twenty, tmp_path):
    pairs = gather_inputs([twenty], tmp_path / "o")
    shards = [select_shard(pairs, (i, 3)) for i in range(3)]
    names = [{str(rel) for _, rel in s} for s in shards]
    assert set.union(*names) == {str(rel) for _, rel in pairs} and sum(map(len, names)) == len(pairs)
    assert all(names) and not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    shutil.copy(PETS / "images" / sorted(p.name for p in (PETS / "images").glob("*.jpg"))[25], twenty / "new.jpg")
    grown = [{str(rel) for _, rel in select_shard(gather_inputs([twenty], tmp_path / "o"), (i, 3))} for i in range(3)]
    assert all(old <= new for old, new in zip(names, grown))  # adding a file moves no other file
    for text, msg in (("3/3", "need 0 <= I < N"), ("a/b", "expected I/N"), ("1", "expected I/N")):
        with pytest.raises(SegrtError, match=msg):
            parse_shard(text)


def test_union_of_shard_runs_is_the_unsharded_run(exported, twenty, tmp_path):
    assert predict_cli(twenty, "--model", exported, "--out", tmp_path / "all", "--provider", "cpu").exit_code == 1
    for i in range(3):
        res = predict_cli(twenty, "--model", exported, "--out", tmp_path / "sharded", "--provider", "cpu",
                          "--shard", f"{i}/3")
        assert res.exit_code in (0, 1), res.output
    summaries = [json.loads((tmp_path / "sharded" / f"summary.shard-{i}-of-3.json").read_text()) for i in range(3)]
    assert sum(s["written"] for s in summaries) == 20 and sum(s["failed"] for s in summaries) == 1
    assert not (tmp_path / "sharded" / "summary.json").exists()
    masks = sorted(p.name for p in (tmp_path / "all").glob("*.png"))
    assert masks == sorted(p.name for p in (tmp_path / "sharded").glob("*.png"))
    assert all((tmp_path / "all" / m).read_bytes() == (tmp_path / "sharded" / m).read_bytes() for m in masks)
    res = predict_cli(twenty, "--model", exported, "--out", tmp_path / "sharded", "--provider", "cpu",
                      "--shard", "0/3", "--skip-existing", "--json")
    assert json.loads(res.stdout)["skipped_existing"] == summaries[0]["written"]  # a shard resumes


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_writes_the_same_masks_as_local_predict(ray_local, exported, twenty, tmp_path):
    from segrt.scale.ray import predict

    assert predict_cli(twenty, "--model", exported, "--out", tmp_path / "local", "--provider", "cpu").exit_code == 1
    logs = []
    summary = predict([str(twenty)], exported, str(tmp_path / "ray"), provider="cpu", num_workers=2, log=logs.append)
    assert summary["written"] == 20 and summary["failed"] == 1 and summary["engine"] == "ray"
    assert logs == [f"error: {twenty / 'broken.jpg'}: not an image, or a format Pillow cannot read"]
    local = sorted(p.name for p in (tmp_path / "local").glob("*.png"))
    assert local == sorted(p.name for p in (tmp_path / "ray").glob("*.png")) and len(local) == 40
    assert all((tmp_path / "local" / n).read_bytes() == (tmp_path / "ray" / n).read_bytes() for n in local)
    assert json.loads((tmp_path / "ray" / "summary.json").read_text())["written"] == 20
    uri = f"file://{tmp_path / 'uri'}"  # any pyarrow filesystem URI
    summary = predict([str(twenty)], exported, uri, provider="cpu", num_workers=1, log=logs.append)
    assert summary["written"] == 20 and (tmp_path / "uri" / "Bengal_133.png").read_bytes() == \
        (tmp_path / "local" / "Bengal_133.png").read_bytes()


def test_ray_cli_refuses_what_it_does_not_do(exported, twenty, tmp_path):
    res = predict_cli(twenty, "--model", exported, "--out", tmp_path / "o", "--engine", "ray", "--tile", "64")
    assert res.exit_code == 2 and "--tile is not available with --engine ray" in res.output


def test_triton_repository(exported, tiny_ckpt, tmp_path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    res = CliRunner().invoke(main, ["triton-repo", str(exported), "--out", str(tmp_path / "repo"), "--name", "tiny",
                                    "--max-batch-size", "16", "--instances", "2", "--tensorrt-fp16"])
    assert res.exit_code == 0, res.output
    model = tmp_path / "repo" / "tiny"
    assert (model / "1" / "model.onnx").read_bytes() == (exported / "model.onnx").read_bytes()
    assert json.loads((model / "manifest.json").read_text())["classes"] == ["background", "pet", "border"]
    config = text_format.Parse((model / "config.pbtxt").read_text(), mc.ModelConfig())
    assert config.name == "tiny" and config.platform == "onnxruntime_onnx" and config.max_batch_size == 16
    (inp,), (out,) = config.input, config.output
    assert (inp.name, list(inp.dims), inp.data_type) == ("image", [3, -1, -1], mc.TYPE_FP32)
    assert (out.name, list(out.dims), out.data_type) == ("logits", [3, -1, -1], mc.TYPE_FP32)
    assert config.instance_group[0].count == 2 and config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    assert config.dynamic_batching.max_queue_delay_microseconds == 100
    trt = config.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert trt.name == "tensorrt" and trt.parameters["precision_mode"] == "FP16"
    res = CliRunner().invoke(main, ["triton-repo", str(exported), "--out", str(tmp_path / "r2"), "--device", "cpu",
                                    "--tensorrt-fp16"])
    assert res.exit_code == 2 and "--tensorrt-fp16 needs --device gpu" in res.output
    res = CliRunner().invoke(main, ["export", str(tiny_ckpt), "--out", str(tmp_path / "exp"), "--formats", "onnx",
                                    "--triton", str(tmp_path / "repo")])
    assert res.exit_code == 0 and (tmp_path / "repo" / "exp" / "config.pbtxt").is_file()


def test_triton_client_example_end_to_end_with_a_stand_in_server(exported):
    """The example's preprocess -> infer -> mask, against a stand-in for Triton that runs the model
    with ONNX Runtime: the mask equals segrt's own."""
    sys.path.insert(0, str(ROOT / "examples"))
    py_compile.compile(str(ROOT / "examples" / "triton_client.py"), doraise=True)
    from triton_client import segment

    from segrt.imaging.decode import read_model_input
    from segrt.imaging.masks import to_mask
    from segrt.manifest import Manifest
    from segrt.runtime.session import Session

    session = Session(exported, provider="cpu", kind="onnx")

    class StandIn:
        def infer(self, model, inputs, outputs):
            logits = session.run(inputs[0]._np)  # the array the example sent
            return type("R", (), {"as_numpy": lambda self, name: logits})()

    import tritonclient.grpc as grpcclient

    real = grpcclient.InferInput.set_data_from_numpy

    def keep(self, array):
        self._np = array
        return real(self, array)

    grpcclient.InferInput.set_data_from_numpy = keep
    try:
        path = PETS / "images" / "Bengal_133.jpg"
        mask = segment(StandIn(), "tiny", Manifest.load(exported), path)
    finally:
        grpcclient.InferInput.set_data_from_numpy = real
    x, geo = read_model_input(path, session.manifest)
    assert (mask == to_mask(session.run(x[None])[0], geo)).all()
    assert isinstance(mask, np.ndarray) and mask.shape == geo.original_hw

"""``glrl eval`` with Caffe models and ``glrl models``, on tiny nets made in a temporary checkout layout
(``<tmp>/prototxt/<net>/deploy.prototxt``, ``<tmp>/models``): a net whose residual is zero must score exactly
what Bicubic scores; the external-model options (residual outside, transposed) do what they say; a release
records what the run recorded and the Set5 PSNR the training probe measured; ``--all --publish`` writes
one table with every published cell and a README block that is a function of ``results.json``."""
from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path
from string import Template
from typing import Dict, List

import numpy as np
import pytest

torch = pytest.importorskip("torch")
h5py = pytest.importorskip("h5py")

from glrl import oracle  # noqa: E402
from glrl.backends.torch_net import TorchNet  # noqa: E402
from glrl.cli import main  # noqa: E402
from glrl.data_prep.manifest import content_sha256  # noqa: E402
from glrl.eval import table  # noqa: E402

# A VDSR-like deploy net: two 3×3 convs predict a residual that an Eltwise layer adds to the input.
DEPLOY = '''name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 32 dim: 32 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "residual"
  convolution_param { num_output: 1 kernel_size: 3 pad: 1 } }
$sum'''
SUM = 'layer { name: "sum" type: "Eltwise" bottom: "data" bottom: "residual" top: "prediction" }\n'

TRAIN = '''name: "tiny"
layer { name: "train_data" type: "HDF5Data" top: "data" top: "label" include { phase: TRAIN }
  hdf5_data_param { source: "data/train.txt" batch_size: 4 } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "msra" } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "residual"
  convolution_param { num_output: 1 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "sum" type: "Eltwise" bottom: "data" bottom: "residual" top: "prediction" }
layer { name: "loss" type: "EuclideanLoss" bottom: "prediction" bottom: "label" top: "loss" }
'''
SOLVER = '''net: "train_test.prototxt" type: "Adam" base_lr: 0.001 lr_policy: "fixed" momentum: 0.9
momentum2: 0.999 max_iter: 6 display: 2 iter_size: 2 snapshot: 3 snapshot_prefix: "snapshots/tiny_x3"
random_seed: 3
'''


def write_deploy(folder: Path, net: str, with_sum: bool = True) -> Path:
    path = folder / "prototxt" / net / "deploy.prototxt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(Template(DEPLOY).substitute(sum=SUM if with_sum else ""))
    return path


def write_weights(deploy: Path, path: Path, blobs: Dict[str, List[np.ndarray]]) -> Path:
    """A caffemodel for ``deploy`` with the given layer blobs."""
    net = TorchNet(str(deploy), "TEST", device="cpu")
    current = net.layer_blobs()
    with torch.no_grad():
        for name, arrays in blobs.items():
            for target, value in zip(current[name], arrays):
                target.copy_(torch.from_numpy(np.asarray(value, dtype=np.float32)).reshape(target.shape))
    net.save_caffemodel(path)
    return path


def random_blobs(seed: int, residual_scale: float) -> Dict[str, List[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {"conv1": [rng.normal(0, 0.5, (4, 1, 3, 3)), rng.normal(0, 0.1, 4)],
            "conv2": [residual_scale * rng.normal(0, 1, (1, 4, 3, 3)), np.zeros(1)]}


def transposed_kernels(blobs: Dict[str, List[np.ndarray]]) -> Dict[str, List[np.ndarray]]:
    return {name: [np.swapaxes(w, 2, 3), b] for name, (w, b) in blobs.items()}


def evaluate(out: Path, data_root: Path, *options: str) -> List[dict]:
    """Run ``glrl eval`` on Set5 ×3 and return its ``results.json`` records."""
    argv = ["eval", "--datasets", "Set5", "--scales", "3", "--quiet", "--device", "cpu",
            "--data-root", str(data_root), "--out", str(out), *options]
    assert main(argv) == 0
    return json.loads((out / "results.json").read_text())


def per_image(out: Path, method: str) -> Dict[str, float]:
    return {row["image"]: row["psnr"] for row in json.loads((out / f"{method}_per_image.json").read_text())}


@pytest.fixture(scope="module")
def bicubic_run(tmp_path_factory, data_root) -> Path:
    out = tmp_path_factory.mktemp("bicubic")
    assert main(["eval", "--method", "bicubic", "--datasets", "Set5", "--scales", "3", "--quiet",
                 "--data-root", str(data_root), "--out", str(out)]) == 0
    return out


def test_a_net_whose_residual_is_zero_scores_exactly_what_bicubic_scores(tmp_path, data_root, bicubic_run):
    deploy = write_deploy(tmp_path, "tiny")
    blobs = random_blobs(1, residual_scale=0.0)
    weights = write_weights(deploy, tmp_path / "zero.caffemodel", blobs)
    evaluate(tmp_path / "out", data_root, "--prototxt", str(deploy), "--weights", str(weights))
    assert per_image(tmp_path / "out", "zero") == per_image(bicubic_run, "bicubic")
    # and a residual that is not zero changes the figures (so the comparison above can fail)
    noisy = write_weights(deploy, tmp_path / "noisy.caffemodel", random_blobs(1, residual_scale=0.05))
    evaluate(tmp_path / "noisy", data_root, "--prototxt", str(deploy), "--weights", str(noisy))
    assert per_image(tmp_path / "noisy", "noisy") != per_image(bicubic_run, "bicubic")


def test_residual_outside_adds_the_input_to_the_nets_output(tmp_path, data_root, bicubic_run):
    deploy = write_deploy(tmp_path, "residual-only", with_sum=False)
    weights = write_weights(deploy, tmp_path / "res.caffemodel", random_blobs(2, residual_scale=0.0))
    records = evaluate(tmp_path / "inside", data_root, "--prototxt", str(deploy), "--weights", str(weights))
    assert records[0]["psnr"] < 10.0  # the net alone outputs zeros: a black image
    evaluate(tmp_path / "outside", data_root, "--prototxt", str(deploy), "--weights", str(weights),
             "--residual-outside")
    assert per_image(tmp_path / "outside", "res") == per_image(bicubic_run, "bicubic")


def test_transposed_runs_the_net_on_the_transposed_image(tmp_path, data_root):
    """Convolving the transposed image with K and transposing back is convolving with K transposed."""
    deploy = write_deploy(tmp_path, "tiny")
    blobs = random_blobs(3, residual_scale=0.05)
    plain = write_weights(deploy, tmp_path / "k.caffemodel", blobs)
    flipped = write_weights(deploy, tmp_path / "kt.caffemodel", transposed_kernels(blobs))
    evaluate(tmp_path / "a", data_root, "--prototxt", str(deploy), "--weights", str(plain), "--transposed")
    evaluate(tmp_path / "b", data_root, "--prototxt", str(deploy), "--weights", str(flipped))
    evaluate(tmp_path / "c", data_root, "--prototxt", str(deploy), "--weights", str(plain))
    a, b, c = per_image(tmp_path / "a", "k"), per_image(tmp_path / "b", "kt"), per_image(tmp_path / "c", "k")
    assert a.keys() == b.keys() == c.keys() and len(a) == 5
    for name in a:
        assert a[name] == pytest.approx(b[name], abs=1e-3)
    assert max(abs(a[name] - c[name]) for name in a) > 0.01  # the option matters for these kernels


def test_an_external_valid_net_runs_edge_padded_and_a_net_that_grows_the_image_is_refused(tmp_path, data_root,
                                                                                            capsys):
    """A net without padding (SRCNN's original deploy) gets its input's border replicated by what it loses;
    one whose padding exceeds its kernels makes images bigger, and is refused naming the padding."""
    def evaluate_net(pad: int) -> int:
        deploy = tmp_path / f"pad{pad}.prototxt"
        deploy.write_text(Template(DEPLOY).substitute(sum="").replace("pad: 1", f"pad: {pad}"))
        weights = write_weights(deploy, tmp_path / f"pad{pad}.caffemodel", random_blobs(4, 0.01))
        return main(["eval", "--datasets", "Set5", "--scales", "3", "--quiet", "--device", "cpu", "--data-root",
                     str(data_root), "--out", str(tmp_path / f"out{pad}"), "--prototxt", str(deploy),
                     "--weights", str(weights)])

    assert evaluate_net(0) == 0
    assert evaluate_net(2) == 2
    err = capsys.readouterr().err
    assert "keeps the size" in err and "pad" in err


@pytest.mark.parametrize("stored, message", [
    ({"conv1": "other1", "conv2": "other2"}, "holds no weights for any layer of"),
    ({"conv1": "conv1", "conv2": "other2"}, "holds no weights for 1 of the 2 layers with parameters of"),
])
def test_weights_of_another_net_are_refused_naming_the_layers_left_unset(tmp_path, data_root, capsys, stored,
                                                                          message):
    """Caffe would run the unmatched layers on their fillers and the table would score a net nobody trained."""
    deploy = write_deploy(tmp_path, "tiny")
    other = tmp_path / "other.prototxt"
    text = deploy.read_text()
    for name, stored_as in stored.items():
        text = text.replace(f'name: "{name}"', f'name: "{stored_as}"')
    other.write_text(text)
    weights = write_weights(other, tmp_path / "other.caffemodel",
                            {stored[k]: v for k, v in random_blobs(5, 0.01).items()})
    argv = ["eval", "--datasets", "Set5", "--scales", "3", "--quiet", "--device", "cpu", "--data-root",
            str(data_root), "--out", str(tmp_path / "out"), "--prototxt", str(deploy), "--weights", str(weights)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "'conv2'" in err and "another net" in err
    assert not (tmp_path / "out" / "results.json").exists()


@pytest.mark.parametrize("options, message", [
    (["--method", "bicubic", "--transposed"], "apply to --prototxt/--weights models only"),
    (["--method", "bicubic", "--publish", "docs"], "--publish goes with --all"),
    (["--weights", "w.caffemodel"], "--prototxt and --weights go together"),
    (["--model", "nope"], "no released model named 'nope'"),
    (["--prototxt", "missing.prototxt", "--weights", "missing.caffemodel"], "not found"),
])
def test_misused_options_are_clear_errors(tmp_path, data_root, capsys, options, message):
    (tmp_path / "models").mkdir()  # an empty models folder
    argv = ["eval", "--quiet", "--data-root", str(data_root), "--out", str(tmp_path / "out"),
            "--models-dir", str(tmp_path / "models"), *options]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_a_deploy_net_with_two_inputs_is_refused_naming_them(tmp_path, data_root, capsys):
    deploy = write_deploy(tmp_path, "two-inputs")
    deploy.write_text(deploy.read_text() + 'layer { name: "aux" type: "Input" top: "aux" '
                                           "input_param { shape { dim: 1 dim: 1 dim: 32 dim: 32 } } }\n")
    weights = write_weights(deploy, tmp_path / "w.caffemodel", random_blobs(6, 0.01))
    assert main(["eval", "--datasets", "Set5", "--scales", "3", "--quiet", "--device", "cpu", "--data-root",
                 str(data_root), "--out", str(tmp_path / "out"), "--prototxt", str(deploy),
                 "--weights", str(weights)]) == 2
    err = capsys.readouterr().err
    assert f"{deploy} has inputs ['data', 'aux']" in err and "an SR deploy net has one input" in err
    assert not (tmp_path / "out" / "results.json").exists()


def test_all_adds_each_released_model_the_papers_rows_do_not_use_under_its_own_name():
    from glrl import settings
    from glrl.eval.models import plans_for_all

    plans = {plan.name: plan for plan in plans_for_all([3, 4], settings.MODELS_DIR)}
    # glrl-2lrb_x234 already serves GLRL-2LRB at x4 (there is no x4-only model of it): not listed again
    assert list(plans) == ["SRCNN", "GLRL-2LRB", "GLRL", "glrl_x234"]
    assert {s: m.name for s, m in plans["GLRL-2LRB"].models.items()} == {3: "glrl-2lrb_x3", 4: "glrl-2lrb_x234"}
    assert {s: m.name for s, m in plans["GLRL"].models.items()} == {3: "glrl_x3", 4: "glrl_x4"}
    assert {s: m.name for s, m in plans["glrl_x234"].models.items()} == {3: "glrl_x234", 4: "glrl_x234"}


def test_a_nets_released_models_as_one_method_load_each_model_once_for_the_scales_it_serves(tmp_path):
    """create_method("srcnn") runs, per scale, the model model_for_scale picks: here one model for x2 and x3."""
    from glrl import settings
    from glrl.errors import ModelError
    from glrl.eval.methods import create_method
    from glrl.eval.models import ReleasedNetMethod, model_method
    from glrl.model_zoo import get_model

    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(settings.MODELS_DIR / "srcnn_x3.caffemodel", models / "srcnn_x23.caffemodel")
    meta = json.loads((settings.MODELS_DIR / "srcnn_x3.json").read_text())
    (models / "srcnn_x23.json").write_text(json.dumps(dict(meta, name="srcnn_x23", scales=[2, 3])))
    for name, net in (("glrl", "glrl"), ("GLRL-2LRB", "glrl-2lrb"), ("srcnn", "srcnn")):
        method = create_method(name, models_dir=models, device="cpu")
        assert isinstance(method, ReleasedNetMethod) and method.net == net
    y_up = np.random.default_rng(0).random((20, 17))
    out2 = method(y_up, 2)
    loaded = method._loaded["srcnn_x23"]
    out3 = method(y_up, 3)
    assert method._loaded == {"srcnn_x23": loaded}  # loaded once, for both scales
    expected = model_method(get_model("srcnn_x23", models), device="cpu")(y_up, 3)
    assert out2.shape == y_up.shape and np.array_equal(out2, out3) and np.array_equal(out3, expected)
    with pytest.raises(ModelError, match="no released srcnn model for scale x4"):
        method(y_up, 4)


# ----------------------------------------------------------------------------------------- releases
def write_patch_set(folder: Path) -> Path:
    """A tiny patch set with a manifest (its hash is what a release records)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    label = rng.random((24, 1, 12, 12))
    with h5py.File(folder / "a.h5", "w") as handle:
        handle["data"] = (label + 0.05 * rng.standard_normal(label.shape)).astype(np.float32)
        handle["label"] = label.astype(np.float32)
    (folder / "train.txt").write_text(f"{folder / 'a.h5'}\n")
    (folder / "manifest.json").write_text(json.dumps({"format": "glrl-caffe-hdf5-patches/1", "note": "tiny"}))
    return folder / "manifest.json"


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, data_root):
    """A real (tiny) glrl training run in a folder named as `glrl train` names them, with the Set5 probe."""
    from glrl.train.run import RunOptions, train
    from glrl.train.set5 import Set5Probe

    base = tmp_path_factory.mktemp("release")
    run_dir = base / "runs" / "tiny-x3-smoke"
    run_dir.mkdir(parents=True)
    manifest = write_patch_set(run_dir / "data")
    (run_dir / "train_test.prototxt").write_text(TRAIN)
    (run_dir / "solver.prototxt").write_text(SOLVER)
    probe = Set5Probe(data_root / "test" / "Set5", 3)
    result = train(RunOptions(solver=run_dir / "solver.prototxt", run_dir=run_dir, device="cpu",
                              progress=False, tensorboard=False, echo=False))
    return {"base": base, "run_dir": run_dir, "manifest": manifest, "result": result,
            "probe_psnr": probe(lambda batch: _predict(result.caffemodel, run_dir, batch))}


def _predict(weights: Path, run_dir: Path, batch: np.ndarray) -> np.ndarray:
    deploy = run_dir / "deploy.prototxt"
    if not deploy.is_file():
        deploy.write_text(Template(DEPLOY).substitute(sum=SUM))
    net = TorchNet(str(deploy), "TEST", device="cpu")
    net.load_weights(weights)
    return net.run({"data": batch.astype(np.float32)})["prediction"]


def release(base: Path, source: Path, name: str, net: str, *extra: str, data_root: Path) -> int:
    return main(["models", "release", str(source), "--name", name, "--net", net, "--scales", "3",
                 "--models-dir", str(base / "models"), "--data-root", str(data_root), *extra])


def test_release_records_the_run_and_the_set5_psnr_the_training_probe_measures(trained_run, data_root):
    base, run_dir = trained_run["base"], trained_run["run_dir"]
    write_deploy(base, "tiny")
    assert release(base, run_dir, "tiny_x3", "tiny", data_root=data_root) == 0
    meta = json.loads((base / "models" / "tiny_x3.json").read_text())
    weights = base / "models" / "tiny_x3.caffemodel"
    assert weights.read_bytes() == trained_run["result"].caffemodel.read_bytes()
    assert meta["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert meta["iterations"] == 6 and meta["schedule"] == "smoke" and meta["solver"]["max_iter"] == 6
    assert meta["batch_size"] == 8  # 4 per pass × iter_size 2
    manifest = json.loads(trained_run["manifest"].read_text())
    assert meta["data_manifest_sha256"] == content_sha256(manifest)
    assert meta["wall_time_s"] > 0 and meta["precision"] == "fp32"
    sidecar = json.loads(trained_run["result"].solverstate.with_suffix(".glrl.json").read_text())
    assert meta["hardware"] == sidecar["hardware"] and "CPUs" in meta["hardware"]  # the training machine's
    assert meta["deploy"] == "prototxt/tiny/deploy.prototxt" and meta["scales"] == [3]
    assert meta["set5_psnr"]["3"] == pytest.approx(trained_run["probe_psnr"], abs=1e-3)
    # the same figure from glrl eval --model
    records = evaluate(base / "eval", data_root, "--model", "tiny_x3", "--models-dir", str(base / "models"))
    assert [(r["method"], r["model"]) for r in records] == [("tiny_x3", "tiny_x3")]
    assert records[0]["psnr"] == pytest.approx(meta["set5_psnr"]["3"], abs=1e-4)
    # a second release under the same name needs --force
    assert release(base, run_dir, "tiny_x3", "tiny", data_root=data_root) == 2


def test_a_run_moved_away_from_its_patch_set_releases_the_hash_of_the_copy_it_kept(trained_run, data_root,
                                                                                 tmp_path):
    """A run trained on a lent GPU comes back as a tar without its patch set: the copy of the set's manifest
    that glrl train keeps in the run folder still names the data."""
    from glrl.data_prep import manifest as manifest_io

    moved = tmp_path / "runs" / "tiny-x3-smoke"
    shutil.copytree(trained_run["run_dir"], moved, ignore=shutil.ignore_patterns("data", ".lock"))
    kept = {"format": manifest_io.FORMAT, "settings": {"note": "built on the GPU machine"}}
    manifest_io.save(moved, kept, manifest_io.RUN_COPY_NAME)
    write_deploy(tmp_path, "tiny")
    assert release(tmp_path, moved, "tiny_x3", "tiny", data_root=data_root) == 0
    meta = json.loads((tmp_path / "models" / "tiny_x3.json").read_text())
    assert meta["data_manifest_sha256"] == content_sha256(kept)


@pytest.mark.parametrize("scales, untrained", [("2,3", "not 2"), ("7", "not 7")])
def test_a_release_at_a_scale_its_patch_set_did_not_hold_is_refused(trained_run, data_root, tmp_path, capsys,
                                                                    scales, untrained):
    from glrl.data_prep import manifest as manifest_io

    run = tmp_path / "runs" / "tiny-x3-smoke"
    shutil.copytree(trained_run["run_dir"], run, ignore=shutil.ignore_patterns(".lock"))
    manifest_io.save(run, {"format": manifest_io.FORMAT, "settings": {"scales": [3]}}, manifest_io.RUN_COPY_NAME)
    write_deploy(tmp_path, "tiny")
    assert main(["models", "release", str(run), "--name", "tiny", "--net", "tiny", "--scales", scales,
                 "--models-dir", str(tmp_path / "models"), "--data-root", str(data_root)]) == 2
    err = capsys.readouterr().err
    assert f"was trained on patches of scale 3, {untrained}" in err and "--scales 3" in err
    assert not (tmp_path / "models").exists()
    assert release(tmp_path, run, "tiny", "tiny", data_root=data_root) == 0  # --scales 3


def test_a_snapshot_released_before_the_schedule_ends_says_so(trained_run, data_root, tmp_path, capsys):
    write_deploy(tmp_path, "tiny")
    halfway = trained_run["run_dir"] / "snapshots" / "tiny_x3_iter_3.caffemodel"
    assert release(tmp_path, halfway, "tiny_x3", "tiny", data_root=data_root) == 0
    meta = json.loads((tmp_path / "models" / "tiny_x3.json").read_text())
    assert (meta["schedule"], meta["iterations"], meta["solver"]["max_iter"]) == ("smoke", 3, 6)
    assert main(["models", "list", "--models-dir", str(tmp_path / "models")]) == 0
    assert "| smoke | 3 of 6 |" in capsys.readouterr().out
    assert meta["data_manifest_sha256"] == content_sha256(json.loads(trained_run["manifest"].read_text()))


def test_a_release_that_finds_no_patch_set_manifest_says_its_metadata_names_no_data(trained_run, data_root,
                                                                                    tmp_path, capsys):
    write_deploy(tmp_path, "tiny")
    loose = tmp_path / "tiny_x3_iter_6.caffemodel"  # a caffemodel away from any run folder
    shutil.copy(trained_run["result"].caffemodel, loose)
    assert release(tmp_path, loose, "tiny_x3", "tiny", data_root=data_root) == 0
    assert json.loads((tmp_path / "models" / "tiny_x3.json").read_text())["data_manifest_sha256"] is None
    assert "note: no patch-set manifest was found" in capsys.readouterr().err


def test_a_run_begun_on_a_gpu_and_continued_on_a_cpu_is_released_with_both(trained_run, data_root, tmp_path,
                                                                            capsys):
    """The release keeps the run's pieces and names both machines and both precisions in their order; the
    list says how many iterations each did."""
    moved = tmp_path / "runs" / "tiny-x3-smoke"
    shutil.copytree(trained_run["run_dir"], moved, ignore=shutil.ignore_patterns(".lock"))
    final = moved / "snapshots" / "tiny_x3_iter_6.glrl.json"
    sidecar = json.loads(final.read_text())
    gpu_box = "Intel(R) Xeon(R) Processor, 16 CPUs; GPU: NVIDIA H200"
    sidecar["segments"] = [
        {"from_iter": 0, "to_iter": 4, "seconds": 2.0, "precision": "tf32", "hardware": gpu_box},
        {"from_iter": 4, "to_iter": 5, "seconds": 1.0, "precision": "tf32", "hardware": gpu_box},
        {"from_iter": 5, "to_iter": 6, "seconds": 9.0, "precision": "fp32 + Winograd", "hardware": "AMD EPYC, 2 CPUs"}]
    final.write_text(json.dumps(sidecar))
    write_deploy(tmp_path, "tiny")
    assert release(tmp_path, moved, "tiny_x3", "tiny", data_root=data_root) == 0
    text = (tmp_path / "models" / "tiny_x3.json").read_text(encoding="utf-8")
    meta = json.loads(text)
    assert meta["training_segments"] == sidecar["segments"]
    assert meta["precision"] == "tf32 → fp32 + Winograd" and "tf32 → fp32 + Winograd" in text
    assert meta["hardware"] == f"{gpu_box} → AMD EPYC, 2 CPUs"
    assert main(["models", "list", "--models-dir", str(tmp_path / "models")]) == 0
    assert "| NVIDIA H200, tf32: 5 → AMD EPYC, 2 CPUs, fp32 + Winograd: 1 |" in capsys.readouterr().out


@pytest.mark.parametrize("name, scales, message", [
    ("../tiny", "3", "model name '../tiny' is not a plain file name"),
    ("tiny x3", "3", "is not a plain file name"),
    ("tiny_x1", "1", "scales [1] are not scale factors"),
    ("tiny_x3", "3,3", "scales [3, 3] are not scale factors, each named once"),
])
def test_a_release_under_a_name_that_is_no_file_name_or_at_no_scale_is_refused(trained_run, data_root, tmp_path,
                                                                                name, scales, message, capsys):
    write_deploy(tmp_path, "tiny")
    assert main(["models", "release", str(trained_run["run_dir"]), "--name", name, "--net", "tiny", "--scales",
                 scales, "--models-dir", str(tmp_path / "models"), "--data-root", str(data_root)]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "models").exists()


def test_a_release_into_a_models_folder_outside_a_checkout_takes_the_checkouts_committed_net(data_root, tmp_path,
                                                                                             capsys):
    from glrl import model_zoo

    ours = model_zoo.get_model("srcnn_x3")
    assert main(["models", "release", str(ours.weights), "--name", "mine", "--net", "srcnn", "--scales", "3",
                 "--models-dir", str(tmp_path / "models"), "--data-root", str(data_root)]) == 0
    assert "released mine (srcnn, iterations unknown)" in capsys.readouterr().out
    mine = model_zoo.get_model("mine", tmp_path / "models")
    assert mine.metadata["deploy"] == "prototxt/srcnn/deploy.prototxt" and mine.deploy == ours.deploy
    assert mine.set5_psnr[3] == pytest.approx(ours.set5_psnr[3], abs=0.001)


def test_a_release_of_a_net_with_no_deploy_prototxt_names_the_nets_there_are(trained_run, data_root, tmp_path,
                                                                              capsys):
    assert main(["models", "release", str(trained_run["run_dir"]), "--name", "x", "--net", "tiny", "--scales",
                 "3", "--models-dir", str(tmp_path / "models"), "--data-root", str(data_root)]) == 2
    err = capsys.readouterr().err
    assert "unknown net 'tiny'" in err and "choose one of: glrl, glrl-2lrb," in err
    assert not (tmp_path / "models").exists()


def test_models_verify_names_metadata_that_disagrees_with_its_files(trained_run, data_root, tmp_path):
    from glrl import model_zoo, release as releasing

    write_deploy(tmp_path, "tiny")
    assert release(tmp_path, trained_run["run_dir"], "tiny_x3", "tiny", data_root=data_root) == 0
    models = tmp_path / "models"
    assert releasing.problems(model_zoo.get_model("tiny_x3", models)) == []
    meta = json.loads((models / "tiny_x3.json").read_text())
    (models / "tiny_x3.json").write_text(json.dumps(dict(meta, scales=[2, 3])))
    assert releasing.problems(model_zoo.get_model("tiny_x3", models)) == ["tiny_x3: no Set5 PSNR for x2"]
    (models / "tiny_x3.json").write_text(json.dumps(dict(meta, scales=[], name="tiny")))
    assert releasing.problems(model_zoo.get_model("tiny", models)) == [
        "tiny: no scales", "tiny: metadata name differs from its file name tiny_x3"]


@pytest.mark.parametrize("policy, fields", [
    ("fixed", {}),
    ("step", {"gamma": 0.5, "stepsize": 100}),
    ("multistep", {"gamma": 0.5, "stepvalue": [100, 300]}),
    ("exp", {"gamma": 0.5}),
    ("inv", {"gamma": 0.5, "power": 0.75}),
    ("poly", {"power": 0.75}),
    ("sigmoid", {"gamma": 0.5, "stepsize": 100}),
])
def test_the_released_solver_summary_holds_what_its_lr_policy_reads(tmp_path, policy, fields):
    """Enough to recompute every iteration's rate, and nothing the policy ignores; float32 fields as written."""
    from glrl import release as releasing

    (tmp_path / "solver.prototxt").write_text(
        f'base_lr: 0.1 lr_policy: "{policy}" gamma: 0.5 power: 0.75 stepsize: 100 stepvalue: 100 stepvalue: 300 '
        'momentum: 0.9 momentum2: 0.999 weight_decay: 0.0001 max_iter: 400 type: "Adam" clip_gradients: 0.4')
    (tmp_path / "snapshots").mkdir()
    weights = tmp_path / "snapshots" / "x_iter_400.caffemodel"
    weights.write_bytes(b"")
    summary = releasing.read_run(weights).solver
    assert summary == {"type": "Adam", "base_lr": 0.1, "lr_policy": policy, "momentum": 0.9,
                       "weight_decay": 0.0001, "max_iter": 400, "momentum2": 0.999, "clip_gradients": 0.4,
                       **fields}


def test_an_sgd_solver_summary_without_clipping_names_neither_momentum2_nor_a_clip(tmp_path):
    from glrl import release as releasing

    (tmp_path / "solver.prototxt").write_text('base_lr: 0.01 lr_policy: "fixed" momentum: 0.9 max_iter: 10')
    weights = tmp_path / "x_iter_10.caffemodel"
    weights.write_bytes(b"")
    assert releasing.read_run(weights).solver == {"type": "SGD", "base_lr": 0.01, "lr_policy": "fixed",
                                                  "momentum": 0.9, "weight_decay": 0.0, "max_iter": 10}


# ------------------------------------------------------------------------------------- staged training
def start_from(base: Path, source_run: Path, name: str, weights: Path) -> Path:
    """A new run of the tiny net in ``base/runs/<name>``, started from ``weights`` with ``glrl train --weights``."""
    from glrl.cli import main as glrl

    run_dir = base / "runs" / name
    run_dir.mkdir(parents=True)
    for part in ("train_test.prototxt", "solver.prototxt"):
        shutil.copy(source_run / part, run_dir / part)
    shutil.copytree(source_run / "data", run_dir / "data")
    assert glrl(["train", "--solver", str(run_dir / "solver.prototxt"), "--run-dir", str(run_dir), "--weights",
                 str(weights), "--device", "cpu", "--no-set5", "--no-progress", "--threads", "1"]) == 0
    return run_dir


def test_each_stage_of_a_training_in_stages_is_recorded_from_run_to_release(trained_run, data_root, tmp_path,
                                                                            monkeypatch, capsys):
    """A run started from --weights records where they came from (a released model, a snapshot of another
    run, or a file of unknown origin); its release keeps that as initialized_from, and the list shows the
    chain of stages."""
    from glrl import settings
    from glrl.provenance import training_stages

    models = tmp_path / "models"
    monkeypatch.setattr(settings, "MODELS_DIR", models)  # where glrl train looks the weights up
    write_deploy(tmp_path, "tiny")
    assert release(tmp_path, trained_run["run_dir"], "tiny_x3", "tiny", data_root=data_root) == 0
    scratch = json.loads((models / "tiny_x3.json").read_text())
    assert "initialized_from" not in scratch

    # stage 2: fine-tune the released model, and release the result in its place
    stage2 = start_from(tmp_path, trained_run["run_dir"], "stage2-x3-smoke", models / "tiny_x3.caffemodel")
    recorded = json.loads((stage2 / "initial-weights.json").read_text())
    assert recorded["sha256"] == scratch["sha256"] and recorded["model"] == scratch
    assert release(tmp_path, stage2, "tiny_x3", "tiny", "--force", data_root=data_root) == 0
    tuned = json.loads((models / "tiny_x3.json").read_text())
    assert tuned["initialized_from"] == recorded and tuned["sha256"] != scratch["sha256"]

    # stage 3: from a snapshot of stage 2 that was never released: the record is that run's, with its origin
    halfway = stage2 / "snapshots" / "tiny_x3_iter_3.caffemodel"
    stage3 = start_from(tmp_path, trained_run["run_dir"], "stage3-x3-smoke", halfway)
    run = json.loads((stage3 / "initial-weights.json").read_text())["run"]
    assert (run["run_dir"], run["iterations"], run["schedule"]) == (str(stage2), 3, "smoke")
    assert run["initialized_from"]["model"]["sha256"] == scratch["sha256"]
    assert release(tmp_path, stage3, "tiny_third", "tiny", data_root=data_root) == 0
    third = json.loads((models / "tiny_third.json").read_text())
    assert [stage["iterations"] for stage in training_stages(third)] == [6, 3, 6]

    # weights from nowhere known
    loose = tmp_path / "loose.caffemodel"
    shutil.copy(trained_run["run_dir"] / "snapshots" / "tiny_x3_iter_3.caffemodel", loose)
    stage_x = start_from(tmp_path, trained_run["run_dir"], "other-x3-smoke", loose)
    assert set(json.loads((stage_x / "initial-weights.json").read_text())) == {"file", "sha256"}
    assert release(tmp_path, stage_x, "tiny_other", "tiny", data_root=data_root) == 0

    capsys.readouterr()
    assert main(["models", "list", "--models-dir", str(models)]) == 0
    listing = capsys.readouterr().out
    assert "| smoke → smoke | 6 at batch 8 → 6 at batch 8 |" in listing  # tiny_x3
    assert "| smoke → smoke → smoke | 6 at batch 8 → 3 of 6 at batch 8 → 6 at batch 8 |" in listing
    assert "| ? → smoke | ? → 6 at batch 8 |" in listing
    here = json.loads((models / "tiny_third.json").read_text())["training_segments"][0]["hardware"]
    assert f"| {here}, fp32: 15 |" in listing  # tiny_third: 6, then 3, then 6 iterations, all on this machine
    assert f"| ?, ? → {here}, fp32: 6 |" in listing  # tiny_other: weights of unknown origin


def test_a_release_refuses_a_run_whose_initial_weights_record_is_unreadable(trained_run, data_root, tmp_path,
                                                                              capsys):
    write_deploy(tmp_path, "tiny")
    run_dir = tmp_path / "runs" / "broken-x3-smoke"
    shutil.copytree(trained_run["run_dir"], run_dir)
    (run_dir / "initial-weights.json").write_text("{")
    assert release(tmp_path, run_dir, "tiny_x3", "tiny", data_root=data_root) == 2
    assert f"cannot read {run_dir / 'initial-weights.json'}" in capsys.readouterr().err
    assert not (tmp_path / "models").exists()


def test_weights_with_resume_or_a_missing_weights_file_are_refused_before_anything_is_written(
        trained_run, tmp_path, capsys):
    run_dir = trained_run["run_dir"]
    assert main(["train", "--solver", str(run_dir / "solver.prototxt"), "--run-dir", str(tmp_path / "run"),
                 "--resume", "--weights", str(trained_run["result"].caffemodel), "--no-set5"]) == 2
    assert "give one of them" in capsys.readouterr().err
    assert main(["train", "--solver", str(run_dir / "solver.prototxt"), "--run-dir", str(tmp_path / "run"),
                 "--weights", str(tmp_path / "missing.caffemodel"), "--no-set5"]) == 2
    assert "missing.caffemodel: no such file" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before the run folder was made


def test_a_run_resumed_under_an_edited_solver_is_released_with_the_fields_its_lr_policy_reads(
        trained_run, data_root, tmp_path):
    """As ``caffe train --solver new.prototxt --snapshot S``: the rate from the resumed iteration on follows the
    edited policy, and the release records what a reader needs to recompute every iteration's rate."""
    import csv

    run_dir = tmp_path / "runs" / "tiny-x3-smoke"
    shutil.copytree(trained_run["run_dir"], run_dir, ignore=shutil.ignore_patterns(".lock", "*_iter_6.*"))
    edited = SOLVER.replace('lr_policy: "fixed"', 'lr_policy: "multistep" gamma: 0.5 stepvalue: 2 stepvalue: 4')
    (run_dir / "solver.prototxt").write_text(edited)
    state = run_dir / "snapshots" / "tiny_x3_iter_3.solverstate"
    assert main(["train", "--solver", str(run_dir / "solver.prototxt"), "--run-dir", str(run_dir),
                 "--resume", str(state), "--no-set5", "--no-progress"]) == 0
    with (run_dir / "metrics.csv").open() as handle:
        rates = {int(row["iteration"]): float(row["lr"]) for row in csv.DictReader(handle) if row["lr"]}
    assert rates[4] == pytest.approx(0.001 * 0.25)  # both steps passed by iteration 4, one per iteration
    write_deploy(tmp_path, "tiny")
    assert release(tmp_path, run_dir, "tiny_x3", "tiny", data_root=data_root) == 0
    solver = json.loads((tmp_path / "models" / "tiny_x3.json").read_text())["solver"]
    assert (solver["lr_policy"], solver["gamma"], solver["stepvalue"]) == ("multistep", 0.5, [2, 4])
    assert "stepsize" not in solver


def test_a_release_takes_the_batch_of_the_data_layer_caffe_runs_in_train(tmp_path):
    from glrl.release import read_run

    run_dir = tmp_path / "run"
    (run_dir / "snapshots").mkdir(parents=True)
    test_first = TRAIN.replace('include { phase: TRAIN }', 'exclude { phase: TEST }').replace(
        'layer { name: "train_data"',
        'layer { name: "test_data" type: "HDF5Data" top: "data" top: "label" exclude { phase: TRAIN }\n'
        '  hdf5_data_param { source: "data/val.txt" batch_size: 2 } }\nlayer { name: "train_data"')
    (run_dir / "train_test.prototxt").write_text(test_first)
    (run_dir / "solver.prototxt").write_text(SOLVER)
    weights = run_dir / "snapshots" / "tiny_x3_iter_6.caffemodel"
    weights.write_bytes(b"")
    assert read_run(weights).batch_size == 8  # the TRAIN layer's 4 × iter_size 2, not the TEST layer's 2


@pytest.mark.parametrize("folder, schedule", [
    ("glrl-x234-cpu-20k-adam", "cpu-20k"), ("srcnn-x234-cpu-20k-adam-1e-3", "cpu-20k"),
    ("glrl-x3-cpu-release", "cpu-release"), ("glrl-x3-paper", "paper"), ("my-run", None),
    ("glrl-x234-gpu-finetune-adam-b128", "gpu-finetune"), ("srcnn-x2-cpu-60k-adam-1e-3", "cpu-60k"),
    ("glrl-x3-paper-x3_p63", "paper"), ("glrl-x3-cpu-short-paper", "cpu-short"),
    ("glrl-2lrb-x3-cpu-finetune-adam-2.5e-5-b16-x3-p63", "cpu-finetune"), ("glrl-x3-cpu-shortish", None)])
def test_a_release_reads_the_schedule_from_the_run_folder_name_glrl_train_gave_it(folder, schedule):
    from glrl.release import _schedule_from_folder

    assert _schedule_from_folder(Path(folder)) == schedule


def test_models_verify_finds_corrupt_weights_and_orphans(trained_run, data_root, tmp_path, capsys):
    write_deploy(tmp_path, "tiny")
    source = trained_run["result"].caffemodel
    assert release(tmp_path, source, "copy", "tiny", "--schedule", "cpu-short", data_root=data_root) == 0
    models = str(tmp_path / "models")
    assert main(["models", "verify", "--measure", "--models-dir", models, "--data-root", str(data_root)]) == 0
    assert main(["models", "list", "--models-dir", models]) == 0
    assert "| copy | tiny | 3 |" in capsys.readouterr().out
    weights = tmp_path / "models" / "copy.caffemodel"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    (tmp_path / "models" / "stray.caffemodel").write_bytes(b"")
    (tmp_path / "models" / "broken.json").write_text("{")
    assert main(["models", "verify", "--models-dir", models]) == 1
    out = capsys.readouterr().out
    assert f"released model copy: {weights} has SHA-256" in out  # each problem, past a broken file
    assert "stray.caffemodel has no metadata" in out
    assert "broken: FAILED" in out and f"cannot read model metadata {tmp_path / 'models' / 'broken.json'}" in out
    (tmp_path / "empty").mkdir()
    assert main(["models", "verify", "--models-dir", str(tmp_path / "empty")]) == 1
    assert f"no released models in {tmp_path / 'empty'}" in capsys.readouterr().out


def test_eval_by_net_skips_a_scale_without_a_released_model_with_a_note(trained_run, data_root, tmp_path):
    write_deploy(tmp_path, "glrl")  # the tiny net stands in for GLRL in this temporary checkout
    assert release(tmp_path, trained_run["result"].caffemodel, "glrl_x3", "glrl", data_root=data_root) == 0
    records = evaluate(tmp_path / "out", data_root, "--method", "glrl", "--scales", "2,3,8",
                       "--models-dir", str(tmp_path / "models"))
    by_scale = {r["scale"]: r for r in records if r["method"] == "GLRL"}
    assert {r["scale"] for r in records} == {2, 3, 8}  # no published x4 cell listed as "not measured"
    assert by_scale[3]["model"] == "glrl_x3" and by_scale[3]["published_psnr"] == 33.09
    assert by_scale[2]["psnr"] is None and by_scale[2]["note"] == "no released glrl model for x2"
    assert by_scale[8]["table"] is None and by_scale[8]["note"] == "no released glrl model for x8"  # no paper cell


def test_all_writes_every_published_cell_the_figures_and_the_readme_block(trained_run, data_root, tmp_path):
    write_deploy(tmp_path, "glrl")
    assert release(tmp_path, trained_run["result"].caffemodel, "glrl_x3", "glrl", data_root=data_root) == 0
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n{table.README_BEGIN}\nold\n{table.README_END}\nafter\n")
    out, docs = tmp_path / "out", tmp_path / "docs" / "results"
    assert main(["eval", "--all", "--datasets", "Set5", "--quiet", "--device", "cpu", "--data-root",
                 str(data_root), "--out", str(out), "--models-dir", str(tmp_path / "models"),
                 "--publish", str(docs), "--readme", str(readme)]) == 0
    records = table.load_records(docs / "results.json")
    cells = {(r["table"], r["scale"], r["method"]): r for r in records}
    # every Set5 cell the paper prints (5 methods × 3 scales of Table 2, 2 of Table 1), in its order
    assert [(r["table"], r["scale"], r["method"]) for r in records][:17] == (
        [(2, s, m) for s in (2, 3, 4) for m in ("Bicubic", "SelfEx", "MFTV", "SRCNN", "GLRL")]
        + [(1, 3, "GLRL-2LRB"), (1, 3, "GLRL-3LRB")])
    assert cells[(2, 3, "Bicubic")]["psnr"] == pytest.approx(30.39, abs=0.005)
    assert cells[(2, 3, "SelfEx")]["psnr"] is None and cells[(2, 3, "SelfEx")]["note"] == "published only"
    assert cells[(2, 3, "GLRL")]["model"] == "glrl_x3"
    assert cells[(1, 3, "GLRL-3LRB")]["psnr"] == cells[(2, 3, "GLRL")]["psnr"]
    assert cells[(1, 3, "GLRL-2LRB")]["note"] == "no released glrl-2lrb model for x3"
    assert cells[(2, 4, "GLRL")]["note"] == "no released glrl model for x4"
    # CSV and Markdown carry the same rows; the README block is a function of results.json
    assert len((out / "results.csv").read_text().splitlines()) == len(records) + 1
    with open(out / "results.csv", newline="") as handle:
        measured = [row for row in csv.DictReader(handle) if row["psnr"] and row["published_psnr"]]
    assert measured
    for row in measured:  # the differences to 4 (PSNR) and 6 (SSIM) decimals
        for metric, digits in (("psnr", 4), ("ssim", 6)):
            delta = row[f"delta_{metric}"]
            assert len(delta.split(".")[1]) == digits
            assert float(delta) == pytest.approx(float(row[metric]) - float(row[f"published_{metric}"]),
                                                 abs=0.6 * 10 ** -digits)
    assert table.markdown_from_records(records) in (docs / "table.md").read_text()
    images = [(alt, f"docs/results/{name}") for alt, name in table.PUBLISHED_FIGURES]
    text = readme.read_text()
    assert table.readme_block(readme) == table.readme_block_text(records, images)
    assert text.startswith("# x\n\nbefore\n") and text.endswith(f"{table.README_END}\nafter\n")
    from PIL import Image

    for name in ("psnr.png", "figure6.png"):
        assert Image.open(docs / name).size[0] > 300
    assert (out / "images" / "GLRL" / "Set5" / "x3" / "baby.png").is_file()


def test_publish_needs_the_readme_markers(tmp_path, data_root, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    (tmp_path / "models").mkdir()
    argv = ["eval", "--all", "--datasets", "Set5", "--scales", "3", "--quiet", "--data-root", str(data_root),
            "--out", str(tmp_path / "out"), "--models-dir", str(tmp_path / "models"),
            "--publish", str(tmp_path / "docs"), "--readme", str(readme)]
    assert main(argv) == 2
    assert "results:begin" in capsys.readouterr().err and readme.read_text() == "# no markers\n"


@pytest.mark.oracle
def test_real_caffe_gives_the_same_set5_figures_as_the_torch_backend(tmp_path, data_root, caffe_root):
    deploy = write_deploy(tmp_path, "tiny")
    weights = write_weights(deploy, tmp_path / "w.caffemodel", random_blobs(5, residual_scale=0.05))
    ours = evaluate(tmp_path / "out", data_root, "--prototxt", str(deploy), "--weights", str(weights))[0]
    with oracle.RootSession() as session:
        set5 = session.path / "data" / "test" / "Set5"
        set5.mkdir(parents=True)
        for image in (data_root / "test" / "Set5").iterdir():
            (set5 / image.name).write_bytes(image.read_bytes())
        (session.path / "deploy.prototxt").write_bytes(deploy.read_bytes())
        (session.path / "w.caffemodel").write_bytes(weights.read_bytes())
        session.run_python(
            "import json\nfrom pathlib import Path\n"
            "from glrl.eval.models import NetMethod, NetSpec\nfrom glrl.eval.suite import Entry, run_suite\n"
            "method = NetMethod(NetSpec(Path('deploy.prototxt'), Path('w.caffemodel')), backend='caffe')\n"
            "entry = Entry('caffe', {3: lambda: method})\n"
            "result = run_suite([entry], ['Set5'], [3], Path('data'), None, False)\n"
            "s = result.summaries[0]\n"
            "Path('result.json').write_text(json.dumps({'psnr': s.psnr, 'ssim': s.ssim}))\n")
        caffe = json.loads((session.path / "result.json").read_text())
    assert caffe["psnr"] == pytest.approx(ours["psnr"], abs=0.01)
    assert caffe["ssim"] == pytest.approx(ours["ssim"], abs=1e-4)


def test_ours_only_rows_are_table_2_for_the_papers_cells_and_no_table_for_a_folder_or_another_scale():
    from glrl.eval.results import Summary

    measured = [table.Measured(Summary(dataset, scale, "glrl_x234", 30.0, 0.9, None, None, 5), "glrl_x234")
                for dataset, scale in (("Set5", 3), ("mine", 3), ("Set5", 8))]
    cells = table.build_cells(measured, {}, ["Set5", "mine"], [3, 8], ["glrl_x234"])
    assert [(cell.table, cell.dataset, cell.scale) for cell in cells] == [(2, "Set5", 3), (None, "mine", 3),
                                                                          (None, "Set5", 8)]
    rows = table.markdown_from_records([cell.record() for cell in cells]).splitlines()[2:]
    assert rows[0].startswith("| 2 | Set5 | ×3 | glrl_x234 |") and rows[1].startswith("| – | mine | ×3 | glrl_x234 |")

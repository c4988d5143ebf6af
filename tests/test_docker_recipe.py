"""The glrl-caffe image without a Docker engine (issue 7): its commands work with real Caffe and no torch.

* the backend: ``--backend``, else ``$GLRL_BACKEND``, else ``auto`` — torch where it is installed, real Caffe
  where only that is (the image), a clear error where neither is;
* real Caffe's memory: each convolution keeps its own im2col buffer, so the caffe backend runs nets in tiles
  sized by that memory model, and the tiled real-Caffe evaluation equals the torch backend's (oracle);
* in the root that ``docker/install.sh`` set up (Debian bullseye, real Caffe, no torch), the installed
  ``glrl`` runs ``eval --method bicubic`` and ``upscale`` with a model folder, without ``--backend``.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from glrl import backends, oracle, settings, tiling
from glrl.caffe import io
from glrl.errors import ModelError

PSNR_TOLERANCE_DB = 0.01


def test_an_explicit_backend_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv(backends.BACKEND_ENV, "caffe")
    assert backends.resolve_backend("torch") == "torch"
    assert backends.resolve_backend(None) == "caffe"
    monkeypatch.delenv(backends.BACKEND_ENV)
    assert backends.resolve_backend("caffe") == "caffe"


def test_a_bad_backend_name_says_where_it_came_from(monkeypatch):
    monkeypatch.setenv(backends.BACKEND_ENV, "cafe")
    with pytest.raises(ModelError, match="GLRL_BACKEND") as info:
        backends.resolve_backend(None)
    assert "auto, torch, caffe" in info.value.hint
    with pytest.raises(ModelError, match="--backend"):
        backends.resolve_backend("tensorflow")


def _installed(monkeypatch, torch: bool, caffe: bool) -> None:
    real_find_spec = backends.importlib.util.find_spec
    monkeypatch.setattr(backends.importlib.util, "find_spec",
                        lambda name, *a: (real_find_spec(name, *a) if torch else None) if name == "torch"
                        else real_find_spec(name, *a))
    monkeypatch.setattr(backends, "_caffe_importable", lambda: caffe)
    monkeypatch.delenv(backends.BACKEND_ENV, raising=False)


@pytest.mark.parametrize("torch, caffe, chosen", [(True, True, "torch"), (True, False, "torch"),
                                                  (False, True, "caffe")])
def test_auto_prefers_torch_then_real_caffe(monkeypatch, torch, caffe, chosen):
    pytest.importorskip("torch")
    _installed(monkeypatch, torch, caffe)
    assert backends.resolve_backend("auto") == chosen
    assert backends.resolve_backend(None) == chosen


def test_auto_with_neither_backend_says_how_to_install_both(monkeypatch):
    _installed(monkeypatch, torch=False, caffe=False)
    with pytest.raises(ModelError, match="neither torch nor caffe") as info:
        backends.resolve_backend(None)
    assert "pip install torch" in info.value.hint and "python3-caffe" in info.value.hint


def _tiny_net():
    """data (1 ch) -> 3×3 conv (8 ch) -> in-place ReLU -> 1×1 conv (1 ch) -> 5×5 deconv (2 ch)."""
    return io.parse_net("""
        layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 9 dim: 9 } } }
        layer { name: "c1" type: "Convolution" bottom: "data" top: "c1"
                convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
        layer { name: "r1" type: "ReLU" bottom: "c1" top: "c1" }
        layer { name: "c2" type: "Convolution" bottom: "c1" top: "c2"
                convolution_param { num_output: 1 kernel_size: 1 } }
        layer { name: "d3" type: "Deconvolution" bottom: "c2" top: "d3"
                convolution_param { num_output: 2 kernel_size: 5 pad: 2 } }
    """)


def test_real_caffe_memory_counts_blobs_and_each_convolutions_own_im2col_buffer():
    net = _tiny_net()
    blobs = 1 + 8 + 1 + 2                 # data, c1 (ReLU in place), c2, d3
    im2col = 1 * 3 * 3 + 0 + 2 * 5 * 5    # c1: in-channels·k²; c2: 1×1 needs none; d3: out-channels·k²
    assert tiling.caffe_floats_per_pixel(net) == blobs + im2col
    tile = tiling.caffe_tile(net, budget_bytes=4 * (blobs + im2col) * 100 * 100)
    assert tile == 100 - 2 * tiling.receptive_radius(net)


def test_glrl_tiles_keep_real_caffe_under_the_budget():
    glrl = io.read_net(settings.PROTOTXT_DIR / "glrl" / "deploy.prototxt")
    tile = tiling.caffe_tile(glrl)
    per_pixel = tiling.caffe_floats_per_pixel(glrl)
    assert tiling.tile_memory_bytes(glrl, tile, per_pixel) <= tiling.CAFFE_MEMORY_BYTES
    assert tiling.tile_memory_bytes(glrl, tile + 1, per_pixel) > tiling.CAFFE_MEMORY_BYTES
    assert 4 * per_pixel * 510 * 510 > 16 * 2**30  # a whole Set5 image would not fit in 16 GiB


# --- in the real-Caffe root ---------------------------------------------------------------------------

def _random_released_model(checkout: Path, net: str = "glrl-2lrb", name: str = "glrl2_x3") -> Path:
    """``checkout/models`` with one ×3 model of ``net``: He-normal random weights in every convolution (the
    generator starts the reconstruction at zero, i.e. at bicubic, which would hide the net) but the final
    fusion of the predictions, the last reconstruction conv scaled so the net moves Y by about 0.05, as a
    trained model's does."""
    torch = pytest.importorskip("torch")
    from glrl.backends.torch_net import TorchNet
    from glrl.fsutil import sha256_file

    deploy = Path("prototxt") / net / "deploy.prototxt"
    (checkout / deploy).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(settings.REPO_ROOT / deploy, checkout / deploy)
    models = checkout / "models"
    models.mkdir()
    model = TorchNet(checkout / deploy, "TEST", seed=0)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer, blobs in model.layer_blobs().items():
            if blobs and blobs[0].dim() == 4 and layer != "output":  # keep the fusion's averaging weights
                fan_in = blobs[0][0].numel()
                blobs[0].copy_(torch.randn(blobs[0].shape, generator=generator) * (2.0 / fan_in) ** 0.5)
        sample = np.linspace(0.2, 0.8, 24 * 24, dtype=np.float32).reshape(1, 1, 24, 24)
        residual = np.abs(model.run({"data": sample})["output"] - sample).max()
        model.layer_blobs()["rec1_conv2"][0].mul_(0.05 / residual)
    weights = models / f"{name}.caffemodel"
    model.save_caffemodel(weights)
    metadata = {"name": name, "net": net, "deploy": deploy.as_posix(), "scales": [3], "schedule": "test",
                "iterations": 0, "set5_psnr": {}, "sha256": sha256_file(weights)}
    (models / f"{name}.json").write_text(json.dumps(metadata))
    return models


EVAL_IN_ROOT = """
import json, resource, sys, time
from pathlib import Path
from glrl import model_zoo
from glrl.eval import protocol
from glrl.eval.models import model_method
from glrl.imageio import read_image

model = model_zoo.model_for_scale(3, net="glrl-2lrb", models_dir=Path("checkout/models"))
method = model_method(model)  # no backend named: auto, and the root has no torch
assert method.backend == "caffe", method.backend
result = {"tile": method.tile, "margin": method.margin, "psnr": {}}
started = time.perf_counter()
for name in sys.argv[1:]:
    prepared = protocol.prepare(read_image(Path(name + ".png")), 3)
    result["psnr"][name] = protocol.score(prepared.y_true, protocol.run_method(method, prepared, "m"), 3)[0]
result["seconds"] = time.perf_counter() - started
result["max_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps(result))
"""


@pytest.mark.oracle
@pytest.mark.slow  # about 30 s on the busy shared 2-core machine
def test_tiled_real_caffe_evaluation_equals_the_torch_backend_on_set5_x3(caffe_root, data_root):
    from glrl import model_zoo
    from glrl.eval import protocol
    from glrl.eval.models import model_method
    from glrl.imageio import read_image

    images = ("butterfly",)  # 255×255 after the ×3 crop: 2×2 tiles in real Caffe (143 px + 12 px margin)
    with oracle.RootSession(threads=2) as session:
        models = _random_released_model(session.path / "checkout")
        for name in images:
            shutil.copy(data_root / "test" / "Set5" / f"{name}.png", session.path)
        (session.path / "eval.py").write_text(EVAL_IN_ROOT)
        caffe = json.loads(session.run(["python3", "eval.py", *images], timeout=600).splitlines()[-1])
        deploy = io.read_net(models.parent / "prototxt" / "glrl-2lrb" / "deploy.prototxt")
        torch_method = model_method(model_zoo.model_for_scale(3, net="glrl-2lrb", models_dir=models),
                                    backend="torch", device="cpu")
    ours, bicubic = {}, {}
    for name in images:
        prepared = protocol.prepare(read_image(data_root / "test" / "Set5" / f"{name}.png"), 3)
        ours[name] = protocol.score(prepared.y_true, protocol.run_method(torch_method, prepared), 3)[0]
        bicubic[name] = protocol.score(prepared.y_true, protocol.run_method(protocol.bicubic, prepared), 3)[0]

    assert caffe["tile"] == tiling.caffe_tile(deploy) < 255 and caffe["margin"] == tiling.receptive_radius(deploy)
    differences = {name: abs(caffe["psnr"][name] - ours[name]) for name in images}
    assert max(differences.values()) <= PSNR_TOLERANCE_DB, (differences, caffe, ours)
    assert all(abs(ours[name] - bicubic[name]) > 0.1 for name in images), ("the net must change Y", ours)
    # What Caffe and Python hold before a forward pass (~0.45 GiB) plus the tile's bound (1.25 GiB).
    assert caffe["max_rss_bytes"] < 1.8 * 2**30, caffe


@pytest.mark.oracle
def test_the_installed_glrl_evaluates_bicubic_and_upscales_with_real_caffe_without_torch(caffe_root,
                                                                                          data_root, tmp_path):
    from glrl.eval.methods import create_method
    from glrl.eval.suite import evaluate
    from glrl.upscaling import upscale
    from PIL import Image

    small = np.asarray(Image.open(data_root / "test" / "Set5" / "butterfly.png").convert("RGB"))[::4, ::4]
    with oracle.RootSession(threads=2) as session:
        assert session.run_python("import importlib.util; print(importlib.util.find_spec('torch'))") == "None\n"
        models = _random_released_model(session.path / "checkout")
        shutil.copytree(data_root / "test" / "Set5", session.path / "data" / "test" / "Set5")
        Image.fromarray(small).save(session.path / "small.png")
        # 'glrl' is the console script install.sh installed (running this checkout's package); no --backend.
        printed = session.run(["glrl", "upscale", "small.png", "big.png", "--scale", "3", "--net", "glrl-2lrb",
                               "--models-dir", "checkout/models"])
        big = np.asarray(Image.open(session.path / "big.png"))
        session.run(["glrl", "eval", "--method", "bicubic", "--datasets", "Set5", "--scales", "3", "--quiet",
                     "--out", "out"], env={"GLRL_DATA": f"{session.inside}/data"})
        in_root = json.loads((session.path / "out" / "bicubic_per_image.json").read_text())
        here = upscale(small, 3, net="glrl-2lrb", models_dir=models, backend="torch", device="cpu")

    assert "caffe on cpu" in printed and "px tiles" in printed, printed
    assert big.shape == here.shape == (small.shape[0] * 3, small.shape[1] * 3, 3)
    assert np.abs(big.astype(int) - here.astype(int)).max() <= 1
    _, per_image = evaluate("bicubic", create_method("bicubic"), ["Set5"], [3], data_root, progress=False)
    assert {r["image"]: round(r["psnr"], 6) for r in in_root} == {r.image: round(r.psnr, 6) for r in per_image}

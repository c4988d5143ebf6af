"""The glrl-caffe image's recipe at work (issue 7): in the root that docker/install.sh set up — Debian
bullseye, Python 3.9, real Caffe, glrl installed by pip — the installed ``glrl eval --backend caffe`` on
Set5 ×3 gives the PyTorch backend's figures to 0.01 dB, image by image.

The net is SRCNN: the released ×3 SRCNN model when models/ has one, else the committed SRCNN deploy net
with seeded filler weights; either way the check is that the two backends and the two Pythons agree through
the whole evaluation path (GLRL's layers are compared with real Caffe in test_oracle.py). Not GLRL itself:
Caffe 1.0 keeps an im2col buffer per convolution layer, so GLRL on a whole 512×512 Set5 image needs about
18 GB of memory in real Caffe (measured: the OOM killer stopped it at 18.2 GB) and minutes of CPU.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
from glrl import model_zoo, oracle, settings
from glrl.errors import ModelError

pytestmark = [pytest.mark.oracle, pytest.mark.slow]  # about 15 s idle, 45 s on a busy 2-core machine

PSNR_TOLERANCE_DB = 0.01


def released_x3_arguments() -> List[str]:
    try:
        return ["--model", model_zoo.model_for_scale(3, net="srcnn").name]
    except ModelError:
        return []


def per_image_psnr(out_dir: Path) -> Dict[Tuple[str, int, str], float]:
    reports = sorted(out_dir.glob("*_per_image.json"))
    assert len(reports) == 1, reports
    rows = json.loads(reports[0].read_text())
    return {(row["dataset"], row["scale"], row["image"]): row["psnr"] for row in rows}


def test_glrl_eval_with_real_caffe_in_the_root_equals_the_torch_backend_on_set5_x3(caffe_root, data_root,
                                                                                  tmp_path):
    released = released_x3_arguments()
    seeded = tmp_path / "srcnn_seeded.caffemodel"
    if not released:
        from glrl.backends.torch_net import TorchNet

        TorchNet(settings.PROTOTXT_DIR / "srcnn" / "deploy.prototxt", "TEST", seed=7).save_caffemodel(seeded)

    def net_arguments(repo: str, weights: str) -> List[str]:
        return released or ["--prototxt", f"{repo}/prototxt/srcnn/deploy.prototxt", "--weights", weights]

    common = ["--datasets", "Set5", "--scales", "3", "--quiet"]
    with oracle.RootSession(threads=2, include=("models", "prototxt")) as session:
        shutil.copytree(data_root / "test" / "Set5", session.path / "data" / "test" / "Set5")
        if not released:
            shutil.copy(seeded, session.path)
        # 'glrl' is the console script that install.sh installed; it runs this checkout's package.
        session.run(["glrl", "eval", *net_arguments(".", seeded.name), *common, "--backend", "caffe",
                     "--out", "out"], env={"GLRL_DATA": f"{session.inside}/data"}, timeout=900)
        caffe = per_image_psnr(session.path / "out")

    host_net = net_arguments(str(settings.REPO_ROOT), str(seeded))
    subprocess.run([sys.executable, "-m", "glrl", "eval", *host_net, *common, "--backend", "torch",
                    "--device", "cpu", "--out", str(tmp_path / "torch")],
                   check=True, env={**os.environ, "GLRL_DATA": str(data_root)})
    ours = per_image_psnr(tmp_path / "torch")

    assert len(caffe) == 5 and set(caffe) == set(ours)
    differences = {key: abs(caffe[key] - ours[key]) for key in ours}
    assert max(differences.values()) <= PSNR_TOLERANCE_DB, differences

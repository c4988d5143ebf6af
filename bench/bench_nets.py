"""The nets every tool is timed on: one deploy prototxt and one caffemodel per net, shared by all tools.

The committed ``prototxt/<net>/deploy.prototxt`` is used when present (else the generator's deploy net);
the weights are the released ×3 model when there is one, else random He-normal weights (seed 0) saved as
a caffemodel (speed does not depend on the values, and every tool reads the same file).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence

BENCH_NETS = ("glrl", "vdsr", "srcnn")


@dataclass(frozen=True)
class BenchNet:
    name: str
    deploy: Path
    weights: Path
    weights_source: str


def prepare(work: Path, names: Sequence[str] = BENCH_NETS, scale: int = 3) -> List[BenchNet]:
    """Deploy prototxt and caffemodel for each of ``names`` under ``work``."""
    from glrl import model_zoo, settings
    from glrl.backends.torch_fillers import randomize_conv_weights
    from glrl.backends.torch_net import TorchNet
    from glrl.caffe import io
    from glrl.errors import ModelError
    from glrl.nets.registry import get_net

    nets = []
    for name in names:
        try:
            released = model_zoo.model_for_scale(scale, net=name)
            released.verify()
            nets.append(BenchNet(name, released.deploy, released.weights, f"released model {released.name}"))
            continue
        except ModelError:
            pass
        deploy = settings.PROTOTXT_DIR / name / "deploy.prototxt"
        if not deploy.is_file():
            deploy = work / f"{name}_deploy.prototxt"
            io.write_net(get_net(name).deploy(), deploy)
        weights = work / f"{name}_random.caffemodel"
        randomize_conv_weights(TorchNet(deploy, "TEST", seed=0)).save_caffemodel(weights)
        nets.append(BenchNet(name, deploy, weights, "random weights (He-normal in every conv, seed 0)"))
    return nets



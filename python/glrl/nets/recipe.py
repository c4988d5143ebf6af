"""What every generated net offers: a train/test net, a deploy net, patch sizes and a solver.

A net module supplies only its *body*: the layers from the input blob ``data`` (bicubic-upsampled Y in
[0, 1], N×1×H×W) to the SR prediction. :class:`NetRecipe` wraps the body in HDF5 data layers and the
Euclidean loss for training, or in an ``Input`` layer for deployment, so all nets share one I/O contract:
tops ``data``/``label`` in training, and in deploy nets a single output that no layer consumes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Tuple

from glrl.errors import ModelError
from glrl.nets.solver import SolverRecipe, get_optimizer
from glrl.nets.spec import NetSpec

# Deploy nets declare this input size; every backend reshapes to the actual image anyway.
DEFAULT_DEPLOY_SIZE = (256, 256)


@dataclass(frozen=True)
class Body:
    """The result of building a body: the prediction blob, plus any intermediate predictions that are
    supervised too during training, each with its loss weight (DRCN-style deep supervision)."""

    output: str
    supervised: Sequence[Tuple[str, float]] = ()


# (net, input blob name, building the training net?) -> Body
BodyBuilder = Callable[[NetSpec, str, bool], Body]


@dataclass(frozen=True)
class NetRecipe:
    """A named network: its body builder, training patch sizes (input, label) and solver recipe."""

    name: str
    description: str
    patch_sizes: Tuple[int, int]
    build_body: BodyBuilder
    training: SolverRecipe

    def train_test(self, train_source: str, test_source: Optional[str], batch_size: int = 32,
                   test_batch_size: int = 2) -> Any:
        """The training net: HDF5Data (TRAIN: shuffled ``train_source``; TEST: ``test_source``, none for a
        patch set without a validation part), the body and ``EuclideanLoss(prediction, label)`` (eq. 13 of the
        paper: Caffe divides by 2N)."""
        for what, size in (("batch size", batch_size), ("test batch size", test_batch_size)):
            if not isinstance(size, int) or size < 1:
                raise ModelError(f"{self.name}: {what} must be a positive integer, not {size!r}")
        net = NetSpec(self.name)
        net.hdf5_data("train_data", train_source, batch_size, "TRAIN", shuffle=True)
        if test_source is not None:
            net.hdf5_data("test_data", test_source, test_batch_size, "TEST", shuffle=False)
        body = self.build_body(net, "data", True)
        for prediction, weight in body.supervised:
            net.euclidean_loss(f"loss_{prediction}", prediction, "label", weight=weight)
        net.euclidean_loss("loss", body.output, "label")
        return net.to_proto()

    def deploy(self, height: Optional[int] = None, width: Optional[int] = None) -> Any:
        """The inference net: ``Input`` ``data`` of 1×1×H×W and the body; its only output is the SR Y."""
        default_h, default_w = DEFAULT_DEPLOY_SIZE
        height = default_h if height is None else height
        width = default_w if width is None else width
        if not (isinstance(height, int) and isinstance(width, int)) or height < 1 or width < 1:
            raise ModelError(f"{self.name}: deploy size must be positive integers, not {height!r}×{width!r}")
        net = NetSpec(self.name)
        net.input("data", (1, 1, height, width))
        self.build_body(net, "data", False)
        return net.to_proto()

    def solver(self, net_path: str, iters_per_epoch: int, schedule: str = "paper",
               snapshot_prefix: Optional[str] = None, test_iters: int = 50, optimizer: Optional[str] = None) -> Any:
        """The ``pb.SolverParameter`` for training this net with ``schedule`` (see :mod:`glrl.nets.solver`);
        ``optimizer`` names a recipe of ``glrl.nets.solver.OPTIMIZERS`` instead of the net's own."""
        training = get_optimizer(optimizer) if optimizer else self.training
        return training.build(net_path, iters_per_epoch, schedule,
                              snapshot_prefix if snapshot_prefix is not None else self.name, test_iters)

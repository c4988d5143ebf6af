"""Several processes (one per GPU, started by ``torchrun``) training as one Caffe solver would.

Each process reads its contiguous slice of every global batch (:class:`glrl.train.batches.HDF5Batches`
with ``rank``/``world``), runs forward/backward on it (its loss is normalised by its own slice, as Caffe's
loss layers normalise by their batch), then the diffs are summed over processes and divided by their
number, as Caffe's multi-GPU ``NCCL`` sync does before ``ApplyUpdate``. With equal slices this is the
gradient of the single-process batch, so every process applies the same update to the same weights.
Rank 0 alone tests, snapshots and records.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List

import torch
from glrl.errors import TrainingError
from glrl.train.lr_policy import to_float32


@dataclass
class Distributed:
    """This process's place in the run (a single process is rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def reduce_gradients(self, gradients: List[torch.Tensor]) -> None:
        """Sum the diffs over processes (one collective over a flat buffer), then divide by the count."""
        import torch.distributed as dist

        flat = torch.cat([g.reshape(-1) for g in gradients])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.mul_(to_float32(1.0 / self.world))
        offset = 0
        for g in gradients:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def reduce_loss(self, loss: float) -> float:
        """The mean of the processes' losses (the single-process batch's loss)."""
        import torch.distributed as dist

        value = torch.tensor([loss], dtype=torch.float64, device=self._device())
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return float(value.item()) / self.world

    def any(self, flag: bool) -> bool:
        """True on every process when ``flag`` is true on any (e.g. a stop signal reached one of them)."""
        if not self.enabled:
            return flag
        import torch.distributed as dist

        value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=self._device())
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()

    def _device(self) -> torch.device:
        import torch.distributed as dist

        if dist.get_backend() == "nccl":
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")


def from_environment(use_cuda: bool) -> Distributed:
    """Join the process group ``torchrun`` describes in the environment (``WORLD_SIZE`` > 1), with NCCL on
    CUDA and gloo on the CPU; a plain process is rank 0 of 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    import torch.distributed as dist

    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise TrainingError(
                f"process {rank} wants GPU {local_rank} but only {torch.cuda.device_count()} are visible",
                hint="start at most one process per GPU: torchrun --nproc_per_node=<number of GPUs>",
            )
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Distributed(rank=rank, world=world, local_rank=local_rank)

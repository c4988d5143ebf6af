"""The training net's ``HDF5Data`` inputs and their batches.

:func:`hdf5_inputs` finds a net's ``HDF5Data`` layers for a phase. :class:`HDF5Batches` reads one of them
with :class:`glrl.data_prep.reader.CaffeHDF5Reader` (Caffe's exact order and ``rand()`` shuffles, with a
restorable position for bit-identical resumes) as ``{top: array}`` dicts. Several processes (``rank`` of
``world``) use the reader's ``slice`` split: each takes its contiguous ``batch_size / world`` slice of the
single-process batch, so together they see exactly what one process would.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np
from glrl.caffe.phase import layers_in_phase
from glrl.data_prep.reader import CaffeHDF5Reader


@dataclass
class HDF5Input:
    """One ``HDF5Data`` layer of a net: its tops (dataset names), list file, batch size and shuffle flag."""

    layer: str
    tops: List[str]
    source: str
    batch_size: int
    shuffle: bool


def hdf5_inputs(net_param: Any, phase: str = "TRAIN") -> List[HDF5Input]:
    """The ``HDF5Data`` layers of ``net_param`` (a ``caffe.NetParameter``) active in ``phase``."""
    found = []
    for layer in layers_in_phase(net_param, phase):
        if layer.type == "HDF5Data":
            param = layer.hdf5_data_param
            found.append(HDF5Input(layer.name, list(layer.top), param.source, int(param.batch_size),
                                   bool(param.shuffle)))
    return found


class HDF5Batches(CaffeHDF5Reader):
    """The trainer's batches, ``{top: float32 array}``: the shared reader in Caffe's order with the
    ``slice`` split (each of ``world`` processes its contiguous slice of the single-process batch)."""

    def __init__(self, list_file: Path, tops: Sequence[str], batch_size: int, *, shuffle: bool = False,
                 rank: int = 0, world: int = 1) -> None:
        super().__init__(list_file, batch_size, tops, shuffle, rank=rank, world_size=world, split="slice")

    def __next__(self) -> Dict[str, np.ndarray]:  # type: ignore[override]
        return dict(zip(self.tops, super().__next__()))

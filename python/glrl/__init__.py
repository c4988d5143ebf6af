"""glrl: Global and Local Residual Learning super-resolution (Hou, Si, Li 2018), reproduced.

Caffe's artifacts (prototxt, caffemodel, HDF5 patch sets) are the interface; a PyTorch backend and a
pycaffe backend execute them. Importing this package never imports torch: the core runs with numpy alone.
"""
from __future__ import annotations

__version__ = "0.1.0"


def __getattr__(name: str):
    """``glrl.upscale`` on first use, so that ``import glrl`` stays free of torch.

    (The implementation lives in ``glrl.upscaling``: a submodule named ``upscale`` would replace this
    function as the package attribute once imported.)
    """
    if name == "upscale":
        from glrl.upscaling import upscale

        return upscale
    raise AttributeError(f"module 'glrl' has no attribute {name!r}")

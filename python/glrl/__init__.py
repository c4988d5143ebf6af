"""glrl: Global and Local Residual Learning super-resolution (Hou, Si, Li 2018), reproduced.

Caffe's artifacts (prototxt, caffemodel, HDF5 patch sets) are the interface; a PyTorch backend and a
pycaffe backend execute them. Importing this package never imports torch: the core runs with numpy alone.
"""
from __future__ import annotations

__version__ = "0.1.0"

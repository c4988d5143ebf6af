"""Caffe HDF5 training patch sets for GLRL/DRRN/VDSR: building them, reading them back, inspecting them.

``glrl data build`` turns the 291 training images (T91 + BSD200) into shuffled, augmented patch pairs
(bicubic-interpolated low-resolution ``data``, high-resolution ``label``) in HDF5 files that Caffe's
``HDF5Data`` layer reads, plus a list file and a manifest; :mod:`glrl.data_prep.reader` serves the same
files to the PyTorch backend in the order Caffe would. See ``docs/training-data.md``.
"""
from __future__ import annotations

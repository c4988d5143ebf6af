"""Network generators: GLRL and its variants, SRCNN and VDSR, written as Python that emits Caffe prototxt.

``glrl.nets.registry.NETS`` names them all; ``glrl.nets.stats`` measures a net from its prototxt
(parameters, multiply-accumulates per output pixel, depth). ``glrl nets emit --all --out prototxt``
writes the committed files.
"""

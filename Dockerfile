# glrl-caffe: glrl with Debian's real Caffe (BVLC Caffe 1.0, CPU, OpenBLAS) on Debian bullseye, Python 3.9.
#   make docker                                                  # docker build -t glrl-caffe .
#   docker run --rm -v /path/to/datasets:/data glrl-caffe data download --dataset Set5,Set14,BSD100
#   docker run --rm -v /path/to/datasets:/data -v "$PWD:/work" glrl-caffe eval     # = eval --all: Bicubic
#                                                  # and the released models; tables and figures in ./eval
#   docker run --rm -v "$PWD:/work" glrl-caffe upscale in.png out.png --scale 3
# GLRL_BACKEND=caffe below: every command runs real Caffe (the image has no torch); nets run in tiles that
# keep Caffe's memory under about 1.8 GiB (docs/real-caffe.md).
# The install steps are docker/install.sh, which docker/caffe_root.sh also runs in a debootstrapped bullseye
# root: CI tests this recipe there without a Docker engine.
FROM debian:bullseye

# System packages first (Caffe, OpenBLAS, numpy, ...): a layer that code changes do not invalidate.
COPY docker/install.sh /opt/glrl/docker/install.sh
RUN sh /opt/glrl/docker/install.sh

# glrl itself, editable, so the released models and prototxt in /opt/glrl are where it looks for them.
COPY . /opt/glrl
RUN sh /opt/glrl/docker/install.sh /opt/glrl

# Datasets are mounted at /data (or fetched there by 'glrl data download'); outputs go to /work.
ENV GLRL_DATA=/data GLRL_WORK=/work GLRL_BACKEND=caffe MPLBACKEND=Agg GLOG_minloglevel=2
WORKDIR /work
ENTRYPOINT ["glrl"]
CMD ["--help"]

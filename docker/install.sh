#!/bin/sh
# Installs glrl with Debian's real Caffe (BVLC Caffe 1.0, CPU, OpenBLAS) on a Debian bullseye system.
#
# One script for both places that need it, so the recipe is tested without a Docker engine:
#   - the Dockerfile runs it to build the image glrl-caffe;
#   - docker/caffe_root.sh runs it inside a debootstrapped bullseye root (the real-Caffe oracle).
#
# Usage (as root, on Debian bullseye):  sh docker/install.sh SRC
#   SRC: a glrl checkout (pyproject.toml, python/, models/). It is installed editable, so the released
#   models and prototxt in SRC stay where the package finds them. Without SRC only the system packages are
#   installed.
# Python dependencies come from Debian (Python 3.9, numpy 1.19, protobuf 3.12, h5py 2.10, Pillow 8.1): pip
# installs only glrl itself (--no-deps), and fetches only a current pip and setuptools to do so.
# PIP_CERT may name a CA bundle when the index is reached through an intercepting proxy.
set -eu

SRC="${1:-}"

# Real Caffe, the OpenBLAS it should run on, and the packages
# glrl's core needs.
PACKAGES="python3-caffe libopenblas0-pthread python3-numpy python3-h5py python3-protobuf python3-pil
python3-tqdm python3-matplotlib python3-pip ca-certificates"

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $PACKAGES

# Caffe links libblas.so.3: OpenBLAS (pthread) must be the alternative chosen, not the reference BLAS.
blas="$(python3 -c 'import ctypes.util; print(ctypes.util.find_library("blas") or "")')"
blas_target="$(readlink -f "/usr/lib/$(uname -m)-linux-gnu/libblas.so.3" 2>/dev/null || true)"
case "$blas_target" in
    *openblas-pthread*) ;;
    *) echo "install.sh: libblas.so.3 resolves to '${blas_target:-nothing}' (found: '$blas'), not OpenBLAS pthread;" \
            "check 'update-alternatives --display libblas.so.3-$(uname -m)-linux-gnu'" >&2
       exit 1 ;;
esac

python3 -c 'import caffe' || {
    echo "install.sh: python3-caffe is installed but 'import caffe' fails (see above)" >&2
    exit 1
}

if [ -n "$SRC" ]; then
    if [ ! -f "$SRC/pyproject.toml" ] || [ ! -d "$SRC/python/glrl" ]; then
        echo "install.sh: '$SRC' is not a glrl checkout (no pyproject.toml or python/glrl)" >&2
        exit 1
    fi
    # Bullseye's pip 20.3 cannot install a pyproject-only project editable (PEP 660): a current pip can.
    python3 -m pip install --quiet --no-cache-dir --upgrade 'pip>=23,<25'
    python3 -m pip install --quiet --no-cache-dir --no-deps --editable "$SRC"
    glrl --help >/dev/null
fi

apt-get clean
rm -rf /var/lib/apt/lists/*

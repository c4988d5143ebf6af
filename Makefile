# Thin wrappers around the `glrl` command. Every target works from a fresh clone after `make install`.
PY       ?= python3
SCALE    ?= 3
NET      ?= glrl
SCHEDULE ?= paper
DEVICE   ?= auto
BACKEND  ?= auto
# The datasets: $GLRL_DATA, else ../shared/datasets beside a checkout, else ~/.cache/glrl/datasets.
GLRL_DATA ?= $(shell [ -d ../shared/datasets ] && cd ../shared/datasets && pwd)
export GLRL_DATA
GLRL      = $(PY) -m glrl

.PHONY: install test lint data data-verify prototxt train eval eval-bicubic caffe-oracle caffe-root docker bench

install:            ## install glrl (editable) with torch and the test tools, and build the real-Caffe root
	$(PY) -m pip install -e ".[dev]"
	$(MAKE) caffe-root

test: lint          ## lint, then the whole test suite (CI runs exactly this)
	$(PY) -m pytest -q

lint:
	$(PY) -m ruff check python tests bench

data-verify:
	$(GLRL) data verify

data:               ## HDF5 training patches for SCALE (2|3|4|234)
	$(GLRL) data build --scale $(SCALE)

prototxt:           ## regenerate the committed prototxt/ from the generators
	$(GLRL) nets emit --all --out prototxt

train:              ## train NET at SCALE with SCHEDULE on DEVICE (BACKEND=caffe runs real Caffe; TRAIN_ARGS="--optimizer adam --batch-size 128 --cuda-graph" passes more)
	$(GLRL) train --net $(NET) --scale $(SCALE) --schedule $(SCHEDULE) --device $(DEVICE) --backend $(BACKEND) $(TRAIN_ARGS)

eval:               ## Table 1 and Table 2: released models and Bicubic vs the published figures (PUBLISH=docs/results)
	$(GLRL) eval --all --device $(DEVICE) --backend $(BACKEND) $(if $(PUBLISH),--publish $(PUBLISH))

eval-bicubic:
	$(GLRL) eval --method bicubic

caffe-root:         ## build (once, cached outside the repo) the Debian bullseye root with real Caffe
	bash docker/caffe_root.sh

caffe-oracle: caffe-root  ## compare the PyTorch backend with real Caffe
	$(PY) -m pytest -q -m oracle

docker:             ## the glrl-caffe image (needs a Docker engine)
	docker build -t glrl-caffe .

bench:              ## speed benchmarks; writes bench/results/
	$(PY) bench/run.py

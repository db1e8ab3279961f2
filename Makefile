# Two commands: `make demo` (the main job) and `make test`.  Both create .venv if missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The MNIST files (torchvision layout MNIST/raw/*-ubyte); override by setting PYRO_LVM_DATA.
# Without a neighbouring copy it stays empty and the demo downloads into ./data.
export PYRO_LVM_DATA ?= $(if $(wildcard ../shared/data/MNIST/raw),$(abspath ../shared/data))
# Extra flags for the demo, e.g. DEMO_ARGS="--epochs 3 --eval-samples 100".
DEMO_ARGS ?=
export MPLBACKEND ?= Agg

.PHONY: demo test docs examples benchmarks gpu-check gpu-carry clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,examples]'
	touch $@

demo: $(VENV)/.installed
	$(PY) examples/svi_vae.py $(DEMO_ARGS)

test: $(VENV)/.installed
	$(PY) -m pytest -q

# The documentation into docs/_build/html, warnings as errors (docs/conf.py: offline builds).
docs: $(VENV)/.installed
	$(PY) -m sphinx -b html -W --keep-going -q docs docs/_build/html

examples: $(VENV)/.installed
	$(PY) examples/ppca.py
	$(PY) examples/gmm.py
	$(PY) examples/compare_elbos.py
	$(PY) examples/missing_pixels.py
	$(PY) examples/latent_space.py
	$(PY) examples/anomaly.py
	$(PY) examples/clustering.py

benchmarks: $(VENV)/.installed
	$(PY) benchmarks/vae_step.py
	$(PY) benchmarks/loss_step.py

# Every CUDA claim in one command on one GPU, < 9 min (benchmarks/README.md); `make test` runs its
# CPU smoke mode.  Extra flags: GPU_CHECK_ARGS="--only demo iwae_table".
GPU_CHECK_ARGS ?=
gpu-check: $(VENV)/.installed
	$(PY) benchmarks/gpu_check.py --device cuda --out results/gpu_check $(GPU_CHECK_ARGS)

# What the device machine's run carries in .gpu (ignored): the wheels its image lacks (pure
# Python, for its Python 3.12) and MNIST gzipped, 55 MB -> 11 MB (64 MiB travel at most).
GPU_WHEELS = pyro-ppl==1.9.2 pyro-api==0.1.2 arviz==0.23.4 xarray-einstats==0.9.1 \
	h5netcdf==1.8.2 platformdirs==4.14.9
gpu-carry: $(VENV)/.installed
	mkdir -p .gpu/wheels .gpu/mnist
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
		--implementation cp --platform manylinux_2_28_x86_64 -d .gpu/wheels $(GPU_WHEELS)
	for f in $(PYRO_LVM_DATA)/MNIST/raw/*-ubyte; do gzip -c $$f > .gpu/mnist/$$(basename $$f).gz; done
	du -sh .gpu

clean:
	rm -rf results .pytest_cache docs/_build docs/api docs/examples_list.rst

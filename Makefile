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

.PHONY: demo test examples benchmarks clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,examples]'
	touch $@

demo: $(VENV)/.installed
	$(PY) examples/svi_vae.py $(DEMO_ARGS)

test: $(VENV)/.installed
	$(PY) -m pytest -q

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

clean:
	rm -rf results .pytest_cache

# Two commands do all set-up on a fresh machine with Python 3.11 and pip:
#   make demo   -> creates .venv, installs pixelwise, trains + evaluates on built-in synthetic data
#   make test   -> creates .venv, installs pixelwise with test extras, runs the test suite
PYTHON_BOOT ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch/torchvision are pinned to the releases this project is tested with.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: demo test bench lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/pixelwise demo

# One worker per core (pytest-xdist), one torch thread per worker: two torch processes with a
# thread per core each would oversubscribe the cores.
test: $(VENV)/.installed
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n auto --dist worksteal

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests bench

clean:
	rm -rf $(VENV) pixelwise-demo .pytest_cache

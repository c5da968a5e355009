# Two commands do all set-up: `make demo` and `make test` create .venv if missing,
# install detkd into it (editable, with its pinned dependencies), then run.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.detkd-installed
PYTEST_ARGS ?=

.PHONY: demo test venv clean

$(STAMP): pyproject.toml detkd/binary/kernels/xnor_conv.cpp
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -qq --upgrade pip
	$(PY) -m pip install -qq -e '.[dev]'
	$(PY) -m detkd.binary.kernels  # compile the XNOR/popcount kernel now: a missing compiler fails here, clearly
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) tools/demo.py --work-dir work_dirs/demo

# One pytest worker per core (pytest-xdist); tests take their own tmp_path and cache folder.
test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" -n auto --dist worksteal $(PYTEST_ARGS)

clean:
	rm -rf work_dirs .pytest_cache

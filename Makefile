# tenantry: two commands on a fresh machine.
#   make demo   set up .venv, install tenantry (pip install ., not editable), run `tenantry demo`
#   make test   same set-up plus test extras, then the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test install bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml $(shell find tenantry collector_processors pipelines sql dashboards -type f -not -path '*/__pycache__/*' 2>/dev/null)
	$(BIN)/pip install --quiet '.[test]'
	$(BIN)/python build_ext.py --inplace  # the C span decoder, for the source tree the tests import
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/tenantry demo --dir ./tenantry-demo

# with a C compiler here the C decoder must have been built (a broken build fails the tests
# instead of skipping them); without one the numpy decoder is tested alone
test: $(STAMP)
	TENANTRY_REQUIRE_ACCELERATOR=$$(command -v cc >/dev/null 2>&1 && echo 1 || echo 0) $(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/batch_throughput.py

clean:
	rm -rf $(VENV) tenantry-demo build dist *.egg-info

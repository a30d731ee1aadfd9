# Two commands on a fresh machine: `make demo` and `make test`. Both install what they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU wheel of torch 2.13.0 lies on this disk; a bare `torch` would pull a multi-GB CUDA build.
TORCH := torch==2.13.0

.PHONY: install demo test test-fast bench clean

$(BIN)/graphcalc: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(BIN)/graphcalc

# The picture in the README; the embedded engine, so that it comes out the same with or without dot.
demo: install
	$(BIN)/graphcalc analyze samples/seed_cnn.py --batch 16 --optim adam
	GRAPHCALC_RENDER_ENGINE=embedded $(BIN)/graphcalc render samples/resnet18.py --batch 256 \
		--optim adam --depth 2 -o docs/resnet18.svg

# Every test (CI's: .ci/run); about 20 min on 2 cores.
test: install
	$(BIN)/python -m pytest -q

# The quick loop: all but the tests marked slow (large real runs, subprocesses); a few minutes.
test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) *.egg-info

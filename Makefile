# edgeport: `make` runs the main job on the built-in default; `make test` runs the tests.
# Both create the pinned .venv themselves (rebuilt when a requirements file changes; a second run reinstalls nothing).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
RVENV := .venv-runtime
BIN := $(VENV)/bin
STAMP := $(VENV)/.edgeport-installed
RSTAMP := $(RVENV)/.edgeport-installed
PIP_FLAGS := --quiet --disable-pip-version-check

DATASET ?= digits
MODEL ?= tiny_cnn
OUT ?= runs/$(DATASET)-$(MODEL)
TRAIN_ARGS ?=

.PHONY: all run train convert parity bench report test test-runtime test-slow test-arm fuzz benchmarks dist venv clean help

all: run

help:
	@echo "make            train the default model on the default dataset and print its results"
	@echo "make test       run the tests (toolkit + TF-free runtime environment)"
	@echo "make train      DATASET=digits MODEL=tiny_cnn OUT=runs/... TRAIN_ARGS='--epochs 5'"
	@echo "make convert|parity|bench|report   one stage (DATASET=, MODEL=, OUT= as for train)"
	@echo "make benchmarks training and runtime benchmarks (numbers in the README)"
	@echo "make test-slow  long end-to-end tests;  make test-arm  emulated arm64/armhf checks (root)"
	@echo "make fuzz       5,000 mutated models/manifests/archives through edgeport-runtime (FUZZ_CASES=, FUZZ_SEED=)"
	@echo "make dist       build the edgeport-runtime wheel into dist/"

venv: $(STAMP)

# The toolkit environment. tf-keras and tfmot go in with --no-deps (see requirements/toolkit-nodeps.txt).
$(STAMP): requirements/toolkit.txt requirements/toolkit-nodeps.txt pyproject.toml runtime/pyproject.toml
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install $(PIP_FLAGS) -r requirements/toolkit.txt
	$(BIN)/pip install $(PIP_FLAGS) --no-deps -r requirements/toolkit-nodeps.txt
	$(BIN)/pip install $(PIP_FLAGS) --no-deps --no-build-isolation -e runtime -e .
	touch $@

# The runtime's own environment: no TensorFlow, no Keras -- proves the device package stands alone.
$(RSTAMP): requirements/runtime-test.txt runtime/pyproject.toml
	rm -rf $(RVENV)
	$(PYTHON) -m venv $(RVENV)
	$(RVENV)/bin/pip install $(PIP_FLAGS) -r requirements/runtime-test.txt
	$(RVENV)/bin/pip install $(PIP_FLAGS) --no-deps --no-build-isolation -e runtime
	touch $@

BUNDLE := $(OUT)/bundle
CONVERT_ARGS ?= --jobs 2

# The main job: train -> convert (all recipes) -> parity -> bench -> report, each rebuilt only when out of date.
run: $(BUNDLE)/report.md
	@cat $(BUNDLE)/report.md

train: $(OUT)/train.json
convert: $(BUNDLE)/manifest.json
parity: $(BUNDLE)/parity.json
bench: $(BUNDLE)/bench.json
report: $(BUNDLE)/report.md

$(OUT)/train.json: $(STAMP)
	$(BIN)/edgeport train --dataset $(DATASET) --model $(MODEL) --out $(OUT) --force $(TRAIN_ARGS)

$(BUNDLE)/manifest.json: $(OUT)/train.json
	$(BIN)/edgeport convert $(OUT)/model.keras --out $(BUNDLE) --force $(CONVERT_ARGS)

$(BUNDLE)/parity.json: $(BUNDLE)/manifest.json
	$(BIN)/edgeport parity $(BUNDLE)

$(BUNDLE)/bench.json: $(BUNDLE)/parity.json
	$(BIN)/edgeport bench $(BUNDLE)

$(BUNDLE)/report.md: $(BUNDLE)/parity.json $(BUNDLE)/bench.json
	$(BIN)/edgeport report $(BUNDLE) > /dev/null

test: $(STAMP) $(RSTAMP)
	@# the deploy tests start a real OpenSSH server: install it as root when missing, else stop with the command
	@command -v sshd >/dev/null || [ -x /usr/sbin/sshd ] || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssh-server >/dev/null; } || \
	  { echo "make test: the deploy tests need sshd; run: sudo apt-get install openssh-server" >&2; exit 2; }
	@# the service tests check the generated unit with systemd-analyze (package systemd); same rule
	@command -v systemd-analyze >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null; } || \
	  { echo "make test: the service tests need systemd-analyze; run: sudo apt-get install systemd" >&2; exit 2; }
	@# the serve page's browser test drives Debian's Chromium through its chromium-driver: same deal
	@{ command -v chromium >/dev/null && command -v chromedriver >/dev/null; } || { [ "$$(id -u)" = 0 ] && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	  chromium chromium-driver >/dev/null; } || \
	  { echo "make test: the browser test needs Chromium; run: sudo apt-get install chromium chromium-driver" >&2; \
	  exit 2; }
	$(BIN)/python -m pytest -q tests
	$(MAKE) --no-print-directory test-runtime

test-runtime: $(RSTAMP)
	cd runtime && EDGEPORT_RUNTIME_ENV=1 ../$(RVENV)/bin/python -m pytest -q tests

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow tests

# The runtime fuzzer at length (`make test` runs 650 of the same cases): prints cases, outcomes by class, time.
FUZZ_CASES ?= 5000
FUZZ_SEED ?= 1
fuzz: $(RSTAMP)
	cd runtime && ../$(RVENV)/bin/python tests/fuzzing.py --cases $(FUZZ_CASES) --seed $(FUZZ_SEED)

# Emulated ARM (qemu-user + Debian chroots; needs root, installs qemu/mmdebstrap with apt, caches root
# filesystems in ~/.cache/edgeport/rootfs). Fails loudly when emulation cannot be set up.
test-arm: $(STAMP)
	$(BIN)/python -m pytest -q -m arm tests

# Benchmarks print numbers (they are not tests): training time/accuracy, runtime cold start, overhead, bit-exactness.
benchmarks: $(BUNDLE)/manifest.json
	$(BIN)/python benchmarks/bench_train.py digits:tiny_cnn digits:ds_cnn mnist:resnet8
	$(BIN)/python benchmarks/bench_runtime.py $(BUNDLE)
	$(BIN)/python benchmarks/bench_serve.py $(BUNDLE)
	$(BIN)/python benchmarks/bench_finetune.py digits:tiny_cnn mnist:resnet8

dist: $(STAMP)
	rm -rf dist/edgeport_runtime-*.whl
	$(BIN)/pip wheel $(PIP_FLAGS) --no-deps --no-build-isolation -w dist ./runtime

clean:
	rm -rf $(VENV) $(RVENV) dist runtime/build runtime/*.egg-info *.egg-info build

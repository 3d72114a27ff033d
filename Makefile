# ToonLab: two commands on a fresh machine.
#   make demo   create the virtualenv, install the locked dependencies, run the pipeline on the demo data
#   make test   create the virtualenv, install the locked dependencies, run the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.toonlab-installed
export NO_ALBUMENTATIONS_UPDATE := 1
export DVC_NO_ANALYTICS := 1
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install system-deps demo test test-fast lint bench gpu-check lock clean-venv

install: $(STAMP)

# Headless Chromium and its WebDriver (Debian packages, the same version) for the report
# and web-page tests; MUNGE and Slurm (munged, slurmctld, slurmd and the client commands)
# for the tests that start a one-node Slurm cluster on localhost (tests/slurm.py).
system-deps:
	@{ command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; } \
	  && command -v chromedriver >/dev/null 2>&1 || { \
	  echo "installing chromium and chromium-driver (Debian packages, for the browser tests)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	    --no-install-recommends chromium chromium-driver >/dev/null; }
	@PATH="$$PATH:/usr/sbin:/sbin"; command -v munged >/dev/null 2>&1 && command -v slurmctld >/dev/null 2>&1 \
	  && command -v slurmd >/dev/null 2>&1 || { \
	  echo "installing munge and slurm-wlm (Debian packages, for the Slurm executor tests)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	    --no-install-recommends munge slurm-wlm >/dev/null; }

# ToonLab with every extra but tf (pyproject.toml), editable, under the tested lock. Then one
# OpenCV: insightface asks for opencv-python and mediapipe for opencv-contrib-python beside the
# headless build albumentations and rembg ask for; all three unpack into the same cv2/ folder
# and the last one wins (the GUI builds need libGL). Removing all three and putting back the
# headless build alone leaves one owner of cv2, whatever order pip installed them in; `pip
# check` may then report only those two requirements (OPENCV_EXPECTED), anything else fails.
OPENCV_EXPECTED := ^(insightface [^ ]+ requires opencv-python|mediapipe [^ ]+ requires opencv-contrib-python),
$(STAMP): requirements.in requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "ToonLab needs Python 3.11, found " + sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24" "setuptools>=77" wheel
	$(BIN)/python -m pip install --quiet --no-build-isolation -c requirements.lock -e ".[all,test]"
	$(BIN)/python -m pip uninstall --quiet -y opencv-python opencv-contrib-python opencv-python-headless
	$(BIN)/python -m pip install --quiet --no-deps -c requirements.lock opencv-python-headless
	@out=$$($(BIN)/python -m pip check 2>&1); bad=$$(echo "$$out" | grep -v -E '$(OPENCV_EXPECTED)' \
	  | grep -v '^No broken requirements found'); [ -z "$$bad" ] || { echo "$$out"; exit 1; }
	$(BIN)/python -m toonlab.util.opencv
	touch $@

demo: install
	$(BIN)/dvc repro
	@echo "demo done: open reports/index.html (metrics, grids, loss curves of every run)"

# Two workers (pytest-xdist, work stealing), each with its share of the cores; the longest
# end-to-end tests first, one per worker (tests/conftest.py): they overlap with the rest.
# The run ends with its 10 slowest tests and its wall time against the budget (README, Tests).
test: install system-deps
	$(BIN)/python -m pytest -q -n 2 --dist worksteal --durations=10

# The inner loop: unit and module tests, without the end-to-end ones (drivers, Slurm, headless
# browser: marked slow). Under 3 minutes on 2 cores; `make test` is the whole suite.
test-fast: install
	$(BIN)/python -m pytest -q -n 2 --dist worksteal --durations=10 -m "not slow"

# Snakemake's lint, which may say one thing only: no rule names a conda environment or
# container (the rules run the project's virtualenv; README, "Run on a cluster"); and
# dvc.yaml against the stage table (run `.venv/bin/toonlab pipeline --write` after adding
# a module, an import or a model family).
lint: install
	@out=$$($(BIN)/snakemake --lint 2>&1); echo "$$out" | grep -q -E 'Lints for|Congratulations' || { echo "$$out"; exit 1; }; \
	  ! echo "$$out" | grep -E '^\s+\* ' | grep -v 'Specify a conda environment or container for each rule'
	$(BIN)/toonlab pipeline --check

bench: install
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# GPU acceptance in one command (one CUDA GPU, under 8 minutes): every family's step at its
# reference size, resume after kill, torchrun, ONNX Runtime CUDA parity, serve --device cuda.
# `make gpu-check ARGS=--smoke`: the CPU smoke mode (tiny sizes, about a minute).
gpu-check: install
	$(BIN)/python benchmarks/gpu_check.py $(ARGS)

# Re-resolve pyproject.toml (.[all,test], under the pins in requirements.in) in a scratch virtualenv and write the lock from it.
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet --upgrade "setuptools>=77" wheel
	.venv-lock/bin/python -m pip install --quiet --no-build-isolation -c requirements.in ".[all,test]"
	{ echo "# Tested lock of every package in the environment, used as a pip constraint file"; \
	  echo "# (pip install -c requirements.lock ...). Regenerate with 'make lock' after changing"; \
	  echo "# pyproject.toml's dependencies or the pins in requirements.in."; \
	  .venv-lock/bin/python -m pip freeze | grep -v -E '^(-e |toonlab)'; } > requirements.lock
	rm -rf .venv-lock

clean-venv:
	rm -rf $(VENV)

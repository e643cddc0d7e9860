# The two set-up commands of the README: `make demo` (the main job) and `make test` (the suite).
# Both are idempotent: they install the Debian packages they need when missing (as root;
# otherwise they print the apt-get line and stop), create .venv, install the project, then run.
# `make architecture` redraws docs/architecture.png from the code (tools/layers.py).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# ffmpeg: NI stems and mp4 decoding; jackd2 + libportaudio2: live audio and its tests;
# espeak-ng, fluidsynth, fluid-soundfont-gm: the synthetic training data; the rest builds and
# hosts the C bridge and the plugin (dpf-source, lv2 tools, a C/C++ toolchain; clang and its
# runtime libraries for the libFuzzer harness of the C API)
DEBS := ffmpeg jackd2 libjack-jackd2-dev libportaudio2 espeak-ng fluidsynth fluid-soundfont-gm \
        festival flite festvox-kallpc16k festvox-kdlpc16k festvox-italp16k festvox-itapc16k \
        festvox-czech-dita festvox-czech-machac festvox-czech-ph festvox-czech-krb \
        festvox-suopuhe-lj festvox-suopuhe-mv festvox-us-slt-hts festvox-ca-ona-hts \
        dpf-source lv2-dev lv2file lilv-utils sordi g++ make clang libclang-rt-14-dev

.PHONY: demo test architecture deps venv clean

deps:
	@missing=""; \
	for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing Debian packages:$$missing"; \
	    echo "run: sudo apt-get update && sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi

$(VENV)/.installed: pyproject.toml $(wildcard requirements-nodeps.txt) | deps
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "livestems needs Python >= 3.11"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	# test oracles whose declared dependencies we must not pull (see the file's comments)
	if [ -f requirements-nodeps.txt ]; then $(PY) -m pip install -q --no-deps -r requirements-nodeps.txt; fi
	# Open-Unmix, a benchmark peer, kept apart: its package __init__ imports torchaudio
	$(PY) -m pip install -q --no-deps --target $(VENV)/peers openunmix==1.3.0
	touch $@

# the bridge library gives `livestems jack` its C process callback (and the C++ JACK shim);
# make is incremental, so this costs nothing once built
venv: deps $(VENV)/.installed
	$(MAKE) -s -C bridge lib jack

demo: venv
	$(VENV)/bin/livestems demo

test: venv
	$(PY) -m pytest -q

architecture: venv
	$(PY) tools/layers.py --png docs/architecture.png

clean:
	rm -rf $(VENV) demo-out .pytest_cache .hypothesis

# Plain targets a newcomer runs from the README. Everything lives in .venv at the repository root.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEBS := espeak-ng flite sox ffmpeg fluidsynth fluid-soundfont-gm wordnet-base chromium

.PHONY: setup debs test lint quickstart clean

setup: $(STAMP) debs

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[demo,dev,eval]'
	touch $(STAMP)

# Debian tools used by data_prep (speech, music rendering), by the Opus reference codec, and (chromium) by
# the demo's browser test.
debs:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then SUDO=""; \
	elif sudo -n true 2>/dev/null; then SUDO="sudo"; \
	else echo "Missing Debian packages:$$missing"; \
	     echo "Run: sudo apt-get update && sudo apt-get install -y$$missing"; exit 1; fi; \
	echo "Installing Debian packages:$$missing"; \
	$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The main job: offline corpus -> codes -> SentencePiece -> the quickstart recipe -> evaluation + REPORT.md.
quickstart: setup
	$(VENV)/bin/audiollm quickstart --out runs/quickstart

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

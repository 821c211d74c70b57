# Three commands for a fresh clone (Linux, Python 3.11): `make figures`, `make test` and `make book`.
# The first run of any creates .venv and installs everything into it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= quick
DEVICE ?= auto
ONLY ?=
MODEL ?=
FORCE ?=
# torch and torchvision are installed first, pinned to the releases this project is tested with
# (on the build machines they install from local wheels; elsewhere pip downloads them).
TORCH ?= torch==2.14.1 torchvision==0.29.1

.PHONY: figures test book venv clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[test]'
	# cyvlfeat (VLFeat's HOG and dense SIFT, the tests' independent reference) builds against
	# Debian's libvlfeat-dev when it is there (apt-get install libvlfeat-dev; .ci/run does it).
	if [ -f /usr/include/vl/hog.h ]; then \
	  $(PY) -m pip install --quiet numpy cython setuptools wheel scipy && \
	  $(PY) -m pip install --quiet --no-build-isolation cyvlfeat; fi
	touch $(STAMP)

venv: $(STAMP)

figures: $(STAMP)
	$(PY) tools/run_notebooks.py --profile $(PROFILE) --device $(DEVICE) $(if $(ONLY),--only $(ONLY)) $(if $(MODEL),--model $(MODEL)) $(if $(FORCE),--force)

test: $(STAMP)
	$(PY) -m pytest

# the notebooks as `make figures` runs them (up-to-date executed copies reused), then the site
# in build/book/; everything offline
book: $(STAMP)
	$(PY) tools/build_book.py --profile $(PROFILE) --device $(DEVICE) $(if $(FORCE),--force)

clean:
	rm -rf build .pytest_cache

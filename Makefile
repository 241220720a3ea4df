# The two entry points promised on the README's first screen: `make demo` and `make test`.
# Each creates .venv and installs what it needs by itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m burstflow.demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/webhook_throughput.py
	$(BIN)/python benchmarks/pool_burst.py
	$(BIN)/python benchmarks/cron_scale.py
	$(BIN)/python benchmarks/cron_shards.py

clean:
	rm -rf $(VENV) build *.egg-info

# Everything the project needs is installed from here: a fresh machine needs only python3 and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
OUT    ?= out/demo

.PHONY: demo test lint format sample bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

demo: $(STAMP)
	bash runbooks/demo.sh $(OUT)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

sample: $(STAMP)
	$(BIN)/python sample_data/generate.py

# National scale end to end (10M and 15M devices; generates into bench_data/, about 12 GB per 10M): one table.
bench: $(STAMP)
	$(BIN)/python benchmarks/national.py

clean:
	rm -rf $(VENV) out

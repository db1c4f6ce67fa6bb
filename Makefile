# make demo   run the default workflow (offline demo survey, SQLite) in a virtual environment
# make test   run the test suite
# make lint   check the import layers (import-linter contracts in pyproject.toml)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint dry-run clean-demo

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "vo needs Python >= 3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/snakemake --profile profiles/local

dry-run: $(STAMP)
	$(BIN)/snakemake -n

test: $(STAMP)
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/lint-imports

clean-demo:
	rm -rf data/DEMO data/vo.sqlite .snakemake

# fruitnet — `make help` lists the targets. Every target installs into $(VENV) first when needed.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fruitnet-installed
ARGS ?=
SEARCH_ARGS ?=
TRAIN_ARGS ?=
CKPT ?=
INPUT ?=
FORMAT ?= onnx
DATASET ?= fruits

.DEFAULT_GOAL := help
.PHONY: help install train test test-slow test-all lint format clean data sizes bench bench-recipes bench-search bench-latency search search-retrain report eval predict export notebook

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -v venv='$(VENV)' 'BEGIN {FS = ":.*## "} \
		{ gsub(/\$$\(VENV\)/, venv, $$2); name[NR] = $$1; text[NR] = $$2; if (length($$1) > w) w = length($$1) } \
		END { for (i = 1; i <= NR; i++) printf "  %-" w "s  %s\n", name[i], text[i] }'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create $(VENV) and install fruitnet with its dev extras (editable)

train: $(STAMP) ## basic CNN on the embedded synthetic data, CPU, 2 epochs (ARGS=... adds overrides)
	$(PY) -m fruitnet.train trainer=cpu trainer.max_epochs=2 $(ARGS)

test: $(STAMP) ## the test suite (CPU, slow tests excluded); pytest's "no tests" exit 5 fails too
	$(PY) -m pytest -n auto --dist loadfile $(ARGS)

test-slow: $(STAMP) ## only the slow tests (real-data chains, notebook execution, the benchmark quick run)
	$(PY) -m pytest -m slow $(ARGS)

test-all: $(STAMP) ## every test
	$(PY) -m pytest -m "slow or not slow" $(ARGS)

lint: $(STAMP) ## ruff lint and format check
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP) ## ruff format and autofix
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

data: $(STAMP) ## download a Kaggle dataset: make data DATASET=fruits|chest_xray
	$(PY) -m fruitnet.data.download $(DATASET) $(ARGS)

sizes: $(STAMP) ## params / MiB / FLOPs table of the three models
	$(PY) -m fruitnet.models

bench: $(STAMP) ## speed benchmark against the plain PyTorch loop -> bench/RESULTS.md
	$(PY) bench/bench.py $(ARGS)

bench-recipes: $(STAMP) ## study recipes vs best_* at equal wall-clock, sample sets -> bench/RECIPES.md
	$(PY) bench/recipes.py $(ARGS)

bench-search: $(STAMP) ## one multi-target search per dataset vs 8 references, 3 seeds, ORT latency -> bench/SEARCH.md
	$(PY) bench/search.py $(ARGS)

bench-latency: $(STAMP) ## the search's latency table against whole nets, one-by-one vs interleaved timing -> bench/LATENCY.md
	$(PY) bench/latency.py $(ARGS)

# One run folder for both steps of search-retrain (expanded once)
ifndef SEARCH_DIR
SEARCH_DIR := logs/search/runs/make-$(shell date +%Y-%m-%d_%H-%M-%S)
endif
search: $(STAMP) ## architecture search (ProxylessNAS, latency on this machine): make search ARGS="data=fruits data.root=... search.target_latency_ms=4"
	$(PY) -m fruitnet.search hydra.run.dir=$(SEARCH_DIR) $(ARGS)

search-retrain: $(STAMP) ## search then train the found net: ARGS (data) for both, SEARCH_ARGS / TRAIN_ARGS for one
	$(PY) -m fruitnet.search hydra.run.dir=$(SEARCH_DIR) $(ARGS) $(SEARCH_ARGS)
	$(PY) -m fruitnet.train experiment=search_retrain model.arch=$(SEARCH_DIR)/arch.json $(ARGS) $(TRAIN_ARGS)

report: $(STAMP) ## results table (report.md) and accuracy-vs-size plot (report.png) of runs under logs/
	$(PY) -m fruitnet.report $(ARGS)

.PHONY: study
study: $(STAMP) ## the study's whole table, resumable: make study DATASET=fruits|chest_xray ARGS="data.root=..."
	$(PY) -m fruitnet.study data=$(DATASET) $(ARGS)

eval: $(STAMP) ## evaluate a checkpoint: make eval CKPT=path [ARGS="data=... data.root=..."]
	$(PY) -m fruitnet.eval ckpt_path=$(CKPT) $(ARGS)

predict: $(STAMP) ## classify images: make predict CKPT=path INPUT=file_or_dir
	$(PY) -m fruitnet.predict ckpt_path=$(CKPT) input=$(INPUT) $(ARGS)

export: $(STAMP) ## export a checkpoint: make export CKPT=path FORMAT=onnx|torchscript|exported_program
	$(PY) -m fruitnet.export ckpt_path=$(CKPT) format=$(FORMAT) $(ARGS)

clean: ## remove run outputs and caches (keeps $(VENV) and downloaded data)
	rm -rf logs outputs multirun lightning_logs .pytest_cache .ruff_cache build dist *.egg-info
	find . -name __pycache__ -type d -prune -not -path './$(VENV)/*' -exec rm -rf {} +

# avshards: the two commands a newcomer needs are `make shards` and `make test`.
PY      ?= python3
VENV    ?= .venv
PYTHON  := $(VENV)/bin/python
DATA    ?=
OUT     ?= out
SPLITS  ?= train,val
WORKERS ?= $(shell nproc 2>/dev/null || echo 2)
ARGS    ?=
DEMO    ?= demo_data

.PHONY: venv shards demo test test-services bench clean

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[test,viz,s3,ray]'
	touch $@

venv: $(VENV)/.installed

$(VENV)/.bench-installed: $(VENV)/.installed
	$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[test,viz,s3,ray,bench]'
	touch $@

demo: venv
	$(PYTHON) -m shardgen demo --out $(DEMO)

## make shards [DATA=dir] [OUT=dir] [ARGS="--clip-seconds 10 ..."]: build shards (demo corpus when no DATA)
shards: venv
	@if [ -z "$(DATA)" ]; then $(PYTHON) -m shardgen demo --out $(DEMO); fi
	$(PYTHON) -m shardgen build --data $(if $(DATA),$(DATA),$(DEMO)) --out $(OUT) --split $(SPLITS) --workers $(WORKERS) $(ARGS)
	@echo
	@echo "look inside:  tar tvf $(OUT)/train/train-000000.tar | head"
	@echo "              $(VENV)/bin/shardgen inspect $(OUT)/train     (or: source $(VENV)/bin/activate; shardgen ...)"
	@echo "              $(VENV)/bin/shardgen verify $(OUT)/train/manifest.json"

test-services:
	bash scripts/install_test_services.sh

## make test: the whole suite (installs the venv and the loopback test servers first)
test: venv test-services
	$(PYTHON) -m pytest -q

bench: venv $(VENV)/.bench-installed test-services
	$(PYTHON) scripts/bench.py
	$(PYTHON) scripts/bench_build.py
	$(PYTHON) scripts/bench_batching.py
	$(PYTHON) scripts/bench_video.py
	$(PYTHON) scripts/bench_omni.py
	$(PYTHON) scripts/bench_vs_talknet.py

clean:
	rm -rf $(OUT) $(DEMO) .bench

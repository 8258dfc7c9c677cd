# longctx front door. Every target sets up .venv first (idempotent: re-installs only when
# pyproject.toml or constraints-cpu.txt changed).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.longctx-installed
CONFIG ?= ray_jobs/configs/demo_cpu.yaml
STAGE ?= pipeline
PYTEST_ARGS ?=
# Dotted overrides for make repro / repro-base, e.g. REPRO_ARGS=repro.allow_weak_base=true
REPRO_ARGS ?=
# Dotted overrides (and submit.py flags) for make submit, e.g. ARGS="train.max_steps=4 --no-wait"
ARGS ?=
# One tokenizer per Ray actor. HF_HUB_OFFLINE is NOT exported here: a head started by make cluster-up passes
# its environment to every job, and a user's own model must still load from the hub. Only the embedded
# default demo, which needs no hub, runs offline (see demo below); the tests set it in tests/conftest.py.
export TOKENIZERS_PARALLELISM ?= false
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.cache/torch_extensions
export LONGCTX_CACHE_DIR ?= $(CURDIR)/.cache/longctx
export PYTHONUNBUFFERED := 1

.PHONY: setup setup-browser demo test test-e2e test-slow lint format bench bench-gpu repro repro-toy repro-base repro-diagnose cluster-up cluster-down submit cluster-sim clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints-cpu.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# CPU install path: constraints pin torch==2.13.0 (CPU build); GPU images bring their own torch.
	$(PY) -m pip install --quiet -c constraints-cpu.txt -e '.[dev]'
	@touch $(STAMP)

# Offline only for the shipped preset (the embedded model and corpus); make demo CONFIG=... may reach the hub.
demo: setup
	$(if $(filter file,$(origin CONFIG)),HF_HUB_OFFLINE=$${HF_HUB_OFFLINE:-1}) $(PY) -m ray_jobs.pipeline --config $(CONFIG)

# The fast suite (no -m e2e/slow/gpu): what a developer runs before every commit.
test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# Whole pipelines, real heads and simulated clusters (the dashboard screenshots need Chromium). CI runs it
# after make test.
test-e2e: setup setup-browser
	$(PY) -m pytest -m e2e $(PYTEST_ARGS)

# The longest tests (-m slow: a lost node, make repro end to end, ZeRO-3 with a plain LoRA adapter, resubmitted
# runs, the GPU bench's CPU dry run). CI runs it after make test-e2e.
test-slow: setup setup-browser
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: setup
	$(PY) -m bench.run_all

bench-gpu:
	bash bench/gpu/run.sh

repro-base: setup
	$(PY) -m ray_jobs.repro --config ray_jobs/configs/repro_cpu.yaml repro.only_base=true $(REPRO_ARGS)

repro-diagnose: setup
	$(PY) -m repro.base.diagnose --config ray_jobs/configs/repro_cpu.yaml $(REPRO_ARGS)

# The frozen toy reproduction (repro/README.md). make repro runs it too until the real-weights experiment lands.
repro-toy: setup
	$(PY) -m ray_jobs.repro --config ray_jobs/configs/repro_cpu.yaml $(REPRO_ARGS)

repro: repro-toy

cluster-up: setup
	bash cluster/local/up.sh

cluster-down:
	bash cluster/local/down.sh

submit: setup
	bash cluster/local/submit.sh $(STAGE) $(CONFIG) $(ARGS)

# A local autoscaling cluster of simulated nodes (node types from cluster/aws.yaml) running the tiny preset's
# job (CONFIG=... runs another), with its timeline; ARGS as for make submit (dotted overrides, sim.py flags).
cluster-sim: setup
	$(PY) cluster/sim/sim.py $(if $(filter file,$(origin CONFIG)),,--config $(CONFIG)) $(ARGS)

# Headless Chromium (Debian package) for the dashboard screenshots of make cluster-sim. Idempotent; installs
# only as root with apt-get, otherwise says so: make cluster-sim then takes no screenshots, and the tests that
# check them fail unless LONGCTX_ALLOW_NO_BROWSER=1 (then they skip).
setup-browser:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "setup-browser: installing chromium (apt-get)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium) \
	    || echo "setup-browser: chromium install failed; no dashboard screenshots (screenshot tests fail unless LONGCTX_ALLOW_NO_BROWSER=1)"; \
	else echo "setup-browser: no chromium and not root with apt-get; no dashboard screenshots (screenshot tests fail unless LONGCTX_ALLOW_NO_BROWSER=1)"; fi

clean:
	rm -rf runs .cache .pytest_cache

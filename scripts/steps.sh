# shellcheck shell=bash
# Named steps with their wall times, for the check scripts (check-image.sh, check-pins.sh):
#
#   source scripts/steps.sh
#   trap 'steps_report check-foo' EXIT
#   step "1 build" build_fn ARGS...
#
# `step` runs its command and records how long it took; `steps_report NAME` prints every
# finished step's wall time and the total (the report is printed on failure too, through the
# EXIT trap, so a failed run still says how far it got).

declare -a STEP_NAMES=() STEP_SECS=()
STEPS_T0=$(date +%s)

# step NAME CMD...: run CMD, record its wall time under NAME.
step() {
  local name=$1 t0
  shift
  echo
  echo "== $name =="
  t0=$(date +%s)
  "$@"
  STEP_NAMES+=("$name")
  STEP_SECS+=("$(($(date +%s) - t0))")
}

# steps_report NAME: the wall time of each finished step, then the total.
steps_report() {
  local i
  echo
  echo "== $1: wall time per step =="
  for i in "${!STEP_NAMES[@]}"; do
    printf '  %-60s %6s s\n' "${STEP_NAMES[$i]}" "${STEP_SECS[$i]}"
  done
  printf '  %-60s %6s s\n' "total" "$(($(date +%s) - STEPS_T0))"
}

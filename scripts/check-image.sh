#!/usr/bin/env bash
# Build check for the Dockerfile on a machine without a Docker daemon (or a GPU, or a registry).
#
#   1. base:  a CPU stand-in for vLLM's image, made locally: a Debian bookworm rootfs
#             (debootstrap) with Python 3.11, the CPU torch of docker/pins.toml (the index has
#             no CPU build of the image's own torch) and a transformers within the image's pins,
#             imported with `podman import`;
#   2. build: the repository's Dockerfile built on it with buildah (`--isolation chroot`),
#             `--build-arg BASE_IMAGE=<that image> PINS_TARGET=cpu`, the datasets baked from the
#             upstream mirror ($EMARENA_MIRROR, passed as the `mirror` build context) and the
#             embedded model baked;
#   3. score: the README's `docker run --user "$(id -u):$(id -g)" -v "$PWD/runs:/runs" ...
#             emarena score submissions/sgtr --preset smoke` inside the built image (`buildah run
#             --isolation chroot` of the image's entrypoint), as a host user the image does not
#             know (uid:gid $HOST_USER), with EMARENA_OFFLINE=1 and no mirror mounted, so it
#             proves the image holds its data; first the same mount without `--user`, which the
#             entrypoint must refuse with the fix.
# Each step's wall time is printed at the end. Run as root (installs buildah, podman and
# debootstrap with apt when missing). Settings (environment):
#   EMARENA_MIRROR   upstream mirror to bake the datasets from (unset: download from upstream)
#   PRESET           preset to score (default smoke; cpu-demo is the longer, full check)
#   REGIMES          regimes to score, space-separated (default: those the submission lists)
#   REBUILD_BASE=1   rebuild the base image even if it exists (default: reuse it while
#                    docker/pins.toml is unchanged: the base's tag carries its hash)
#   TORCH_WHEEL      a CPU torch wheel to use instead of `pip download torch==<cpu.torch>`
#   HOST_USER        the uid:gid that owns the mounted run folder and scores (4242:4242)
#   CHECK_WORK       scratch folder (default .cache/check-image; the run folder is under it)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

PRESET=${PRESET:-smoke}
REGIMES=${REGIMES:-}
SUBMISSION=submissions/sgtr
WORK=${CHECK_WORK:-$REPO/.cache/check-image}
HOST_USER=${HOST_USER:-4242:4242}
CPU_TORCH=$(python3 scripts/pins.py get cpu.torch)
TORCH_SPEC=torch==$CPU_TORCH
BASE_IMAGE=localhost/emarena-cpu-base:bookworm-pins-$(sha256sum docker/pins.toml | cut -c1-12)
IMAGE=localhost/emarena:check
DEBIAN_SUITE=bookworm
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
export BUILDAH_ISOLATION=chroot

# shellcheck source=scripts/steps.sh
source scripts/steps.sh
trap 'steps_report check-image' EXIT

die() {
  echo "check-image: $*" >&2
  exit 2
}

tools() {
  local missing=()
  for t in buildah podman debootstrap; do
    command -v "$t" >/dev/null || missing+=("$t")
  done
  if ((${#missing[@]})); then
    [[ $(id -u) == 0 ]] || die "missing ${missing[*]}: run as root, or apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      buildah podman debootstrap uidmap >/dev/null
  fi
  buildah --version
  podman --version
}

torch_wheel() {
  # The CPU wheel only: a plain PyPI `torch` for Linux is the multi-GB CUDA build.
  if [[ -n ${TORCH_WHEEL:-} ]]; then
    echo "$TORCH_WHEEL"
    return
  fi
  mkdir -p "$WORK/wheels"
  python3 -m pip download --quiet --no-deps --only-binary=:all: --implementation cp \
    --python-version 3.11 --platform manylinux_2_28_x86_64 -d "$WORK/wheels" "$TORCH_SPEC" >&2
  local found w
  found=("$WORK"/wheels/torch-"$CPU_TORCH"*.whl)
  w=${found[0]}
  [[ $w == *+cpu* ]] || die "pip gave ${w:-no wheel}, not the CPU build of $TORCH_SPEC; fix: set" \
    "TORCH_WHEEL to a CPU wheel or PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu"
  echo "$w"
}

make_base() {
  if [[ ${REBUILD_BASE:-0} != 1 ]] && podman image exists "$BASE_IMAGE"; then
    echo "reusing $BASE_IMAGE (REBUILD_BASE=1 rebuilds it)"
    return
  fi
  local rootfs=$WORK/rootfs wheel
  wheel=$(torch_wheel)
  rm -rf "$rootfs"
  debootstrap --variant=minbase --include=python3,python3-pip,ca-certificates \
    "$DEBIAN_SUITE" "$rootfs" "$DEBIAN_MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || die "debootstrap failed; see $WORK/debootstrap.log"
  # The host's trust store and resolver, so pip inside the builds reaches PyPI as the host does.
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
  cp "$wheel" "$rootfs/tmp/"
  # torch, and what vLLM's image brings that emarena also uses (transformers and its
  # dependencies), within the image's pins: the Dockerfile's install keeps them as they are.
  python3 scripts/pins.py constraints --target cpu >"$rootfs/tmp/pins.txt"
  chroot "$rootfs" env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root \
    python3 -m pip install --quiet --no-cache-dir --break-system-packages \
    --root-user-action=ignore --constraint /tmp/pins.txt "/tmp/$(basename "$wheel")" \
    transformers huggingface-hub tokenizers safetensors pydantic
  rm -f "$rootfs/tmp/$(basename "$wheel")" "$rootfs/tmp/pins.txt"
  chroot "$rootfs" python3 -c 'import torch, transformers; print("base: torch", \
    torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__)'
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE"
  rm -rf "$rootfs"
}

build() {
  local ctx=()
  if [[ -n ${EMARENA_MIRROR:-} ]]; then
    [[ -d $EMARENA_MIRROR ]] || die "EMARENA_MIRROR=$EMARENA_MIRROR is not a folder"
    ctx=(--build-context "mirror=$EMARENA_MIRROR")
  else
    echo "EMARENA_MIRROR unset: the build downloads the datasets from upstream"
  fi
  # --format docker: Docker's image format, so the Dockerfile's SHELL (bash with pipefail) applies
  # as it does under `docker build` (the OCI format drops SHELL with a warning).
  buildah build --isolation chroot --layers --format docker \
    --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg PINS_TARGET=cpu \
    --build-arg EMARENA_EXTRAS=train,ray --build-arg BAKE_EMBEDDED_MODEL=1 "${ctx[@]}" \
    -f Dockerfile -t "$IMAGE" .
}

score() {
  local runs=$WORK/runs ctr user entrypoint args=() out rc
  user=$(buildah inspect --type image --format '{{.OCIv1.Config.User}}' "$IMAGE")
  [[ -n $user && ${user%%:*} != 0 && ${user%%:*} != root ]] || die "image runs as root ($user)"
  read -r -a entrypoint <<<"$(buildah inspect --type image \
    --format '{{range .OCIv1.Config.Entrypoint}}{{.}} {{end}}' "$IMAGE")"
  # The host user's run folder, as `mkdir -p runs` leaves it: theirs, not the image user's.
  rm -rf "$runs"
  mkdir -p "$runs"
  chown "$HOST_USER" "$runs"
  for r in $REGIMES; do args+=(--regimes "$r"); done
  ctr=$(buildah from --pull=never "$IMAGE")
  # shellcheck disable=SC2064  # expand now: the container id is local to this function
  trap "buildah rm $ctr >/dev/null; steps_report check-image" EXIT
  # `docker run` applies the image's USER and ENTRYPOINT; `buildah run` is told both. One bind
  # mount only: given two, buildah 1.28 silently puts its own volumes at both places. /hf is
  # then buildah's volume, initialised from the image's folder as Docker initialises a new
  # named volume (`-v emarena-hf:/hf`), so both of the README's ways are exercised.
  local -a run=(buildah run --isolation chroot --env EMARENA_OFFLINE=1 -v "$runs:/runs")

  echo "without --user (the image's uid $user): the entrypoint must refuse, naming the fix"
  rc=0
  out=$("${run[@]}" --user "$user" "$ctr" -- "${entrypoint[@]}" --help 2>&1) || rc=$?
  echo "$out"
  # shellcheck disable=SC2016  # the message's literal text, not an expansion
  ((rc == 2)) && [[ $out == *'--user "$(id -u):$(id -g)"'* ]] \
    || die "the entrypoint did not refuse the unwritable /runs (exit $rc)"

  echo "with --user $HOST_USER, a uid the image has no entry for:"
  "${run[@]}" --user "$HOST_USER" "$ctr" -- "${entrypoint[@]}" \
    score "$SUBMISSION" --preset "$PRESET" "${args[@]}"
  local n owners
  # -L: a cell's folders may be links into the store (relative, so they resolve here too)
  n=$(find -L "$runs" -path '*/cells/*/metrics/result.json' | wc -l)
  ((n > 0)) || die "the score run wrote no result.json under $runs"
  local dangling
  dangling=$(find "$runs" -xtype l -print -quit)
  [[ -z $dangling ]] || die "links under $runs do not resolve outside the container, e.g. $dangling"
  owners=$(find "$runs" -printf '%U:%G\n' | sort -u | tr '\n' ' ')
  [[ $owners == "$HOST_USER " ]] || die "files under $runs belong to $owners, not $HOST_USER"
  echo "score: $n result.json files under $runs, every file owned by $HOST_USER, every link"
  echo "resolving on the host"
}

mkdir -p "$WORK"
step "0 tools (buildah, podman, debootstrap)" tools
step "1 base image (debootstrap + CPU torch)" make_base
step "2 build Dockerfile (buildah, chroot)" build
step "3 score $SUBMISSION --preset $PRESET" score

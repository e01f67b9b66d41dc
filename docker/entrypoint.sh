#!/usr/bin/env bash
# The image's entrypoint: `docker run IMAGE ARGS...` runs `emarena ARGS...` once the folders a
# run writes are known to be writable, and with a usable HOME and user name under any uid.
#
# A folder mounted from the host (`-v "$PWD/runs:/runs"`) keeps its host owner, and the image
# runs as uid 10001 unless told otherwise: without this check a run would fail deep inside,
# after minutes of work, with a bare "Permission denied". Settings (environment):
#   EMARENA_WRITABLE_DIRS   colon-separated folders to check (default /runs:/hf); an empty
#                           value checks none (for a deliberately read-only /hf, say)
set -euo pipefail

# can_write DIR: create and remove a file in DIR (the real test: access(2) answers yes for root
# on a read-only mount under some runtimes, and ignores ACLs and user-namespace mappings).
can_write() {
  local probe
  probe=$(mktemp "$1/.emarena-write-check.XXXXXX" 2>/dev/null) || return 1
  rm -f "$probe"
}

refuse() {
  local dir=$1 why="it does not exist"
  if [[ -d $dir ]]; then
    why="it belongs to uid:gid $(stat -c '%u:%g' "$dir")"
    why+=" (a folder mounted from the host keeps its host owner)"
  fi
  cat >&2 <<EOF
emarena: cannot write to $dir as uid:gid $(id -u):$(id -g): $why.
Fix, either:
  - run as the folder's owner, so what the run writes is yours on the host:
      docker run --user "\$(id -u):\$(id -g)" -v "\$PWD/runs:/runs" -v "\$PWD/hf:/hf" ...
    (create the folders first: mkdir -p runs hf)
  - or use named volumes, which the image initialises writable for any user:
      docker run -v emarena-runs:/runs -v emarena-hf:/hf ...
EOF
  exit 2
}

IFS=: read -r -a dirs <<<"${EMARENA_WRITABLE_DIRS-/runs:/hf}"
for dir in "${dirs[@]}"; do
  [[ -n $dir ]] || continue
  can_write "$dir" || refuse "$dir"
done

# Under `--user UID:GID` the uid has no passwd entry: HOME is / (not writable) and the user
# name cannot be looked up, which torch's compile cache (getpass.getuser) needs. Give both.
if [[ -z ${HOME:-} ]] || ! can_write "$HOME"; then
  HOME=${TMPDIR:-/tmp}/emarena-home-$(id -u)
  mkdir -p "$HOME"
  export HOME
fi
if ! id -un >/dev/null 2>&1; then
  export USER=${USER:-emarena-$(id -u)} LOGNAME=${LOGNAME:-emarena-$(id -u)}
fi

exec emarena "$@"

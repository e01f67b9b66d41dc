"""The image's entrypoint (docker/entrypoint.sh), run as the plain bash script it is.

A fake `emarena` on PATH records what it was given; the folders to check are real folders, one
read-only and one writable, and the script runs as a non-root uid that has no passwd entry (as
under `docker run --user UID:GID`): through `setpriv` when the tests run as root (root writes
everywhere), else as the current user.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENTRYPOINT = REPO / "docker" / "entrypoint.sh"
UID = 54321  # a uid without a passwd entry, as a host user's uid is inside the image

FAKE_EMARENA = """#!/usr/bin/env bash
python3 - "$@" <<'PY'
import json, os, sys
home = os.environ.get("HOME", "")
json.dump({"argv": sys.argv[1:], "home": home, "home_writable": os.access(home, os.W_OK),
           "user": os.environ.get("USER"), "logname": os.environ.get("LOGNAME"),
           "uid": os.getuid()}, open(os.environ["FAKE_OUT"], "w"))
PY
exit 7
"""


@pytest.fixture
def box() -> Iterator[dict]:
    """A folder every uid can enter: the script, a fake emarena, a read-only and a writable
    folder, a temp folder; with how to run the script as a non-root user."""
    as_root = os.geteuid() == 0
    if as_root and shutil.which("setpriv") is None:
        pytest.skip("running as root needs setpriv (util-linux) to drop to a non-root uid")
    base = Path(tempfile.mkdtemp(prefix="emarena-entrypoint-"))
    try:
        base.chmod(0o755)
        (base / "bin").mkdir(mode=0o755)
        shutil.copy(ENTRYPOINT, base / "entrypoint.sh")
        (base / "entrypoint.sh").chmod(0o755)
        fake = base / "bin" / "emarena"
        fake.write_text(FAKE_EMARENA)
        fake.chmod(0o755)
        ro, rw, out, tmp = (base / n for n in ("ro", "rw", "out", "tmp"))
        for d in (ro, rw, out):
            d.mkdir()
        ro.chmod(0o555)
        tmp.mkdir(mode=0o1777)
        tmp.chmod(0o1777)
        uid = UID if as_root else os.getuid()
        if as_root:
            for d in (rw, out):
                os.chown(d, UID, UID)
        prefix = (["setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups"]
                  if as_root else [])
        yield {"base": base, "ro": ro, "rw": rw, "out": out / "fake.json", "tmp": tmp,
               "uid": uid, "as_root": as_root, "prefix": prefix}
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _run(box: dict, *args: str, dirs: str | None, home: str = "/") -> subprocess.CompletedProcess:
    env = {"PATH": f"{box['base'] / 'bin'}:/usr/local/bin:/usr/bin:/bin", "HOME": home,
           "TMPDIR": str(box["tmp"]), "FAKE_OUT": str(box["out"])}
    if dirs is not None:
        env["EMARENA_WRITABLE_DIRS"] = dirs
    return subprocess.run([*box["prefix"], "bash", str(box["base"] / "entrypoint.sh"), *args],
                          env=env, capture_output=True, text=True, timeout=60, check=False)


def test_writable_folders_run_emarena_with_args_and_exit_code(box):
    args = ("score", "submissions/sgtr", "--preset", "a b", "--run", "x'y")
    r = _run(box, *args, dirs=f"{box['rw']}:{box['rw']}")
    assert r.returncode == 7, r.stderr  # emarena's own exit code
    seen = json.loads(box["out"].read_text())
    assert seen["argv"] == list(args) and seen["uid"] == box["uid"]
    if box["as_root"]:
        # HOME=/ is not writable for that uid: a HOME under TMPDIR instead; and a user name for
        # a uid that has no passwd entry
        assert seen["home"] == f"{box['tmp']}/emarena-home-{UID}" and seen["home_writable"]
        assert seen["user"] == seen["logname"] == f"emarena-{UID}"
    # a writable HOME is kept as it is
    r = _run(box, "--help", dirs=str(box["rw"]), home=str(box["rw"]))
    assert r.returncode == 7 and json.loads(box["out"].read_text())["home"] == str(box["rw"])
    assert not [p for p in box["rw"].iterdir()], "the write check left a file behind"


def test_a_read_only_folder_is_refused_with_the_fix(box):
    r = _run(box, "score", "submissions/sgtr", dirs=f"{box['rw']}:{box['ro']}")
    assert r.returncode == 2
    assert not box["out"].exists(), "emarena ran although a folder is not writable"
    msg = r.stderr
    owner = f"{box['ro'].stat().st_uid}:{box['ro'].stat().st_gid}"
    assert f"cannot write to {box['ro']} as uid:gid {box['uid']}:" in msg
    assert f"it belongs to uid:gid {owner}" in msg
    # the exact fixes: run as the folder's owner, or named volumes
    assert 'docker run --user "$(id -u):$(id -g)" -v "$PWD/runs:/runs" -v "$PWD/hf:/hf"' in msg
    assert "docker run -v emarena-runs:/runs -v emarena-hf:/hf" in msg
    assert str(box["rw"]) not in msg  # only the folder at fault is named


def test_a_missing_folder_is_refused(box):
    missing = box["base"] / "nope"
    r = _run(box, "--help", dirs=str(missing))
    assert r.returncode == 2 and f"cannot write to {missing}" in r.stderr
    assert "it does not exist" in r.stderr and not box["out"].exists()


def test_the_default_folders_are_the_image_volumes(box):
    if os.path.exists("/runs"):
        pytest.skip("this machine has a /runs folder; the default check would look at it")
    r = _run(box, "--help", dirs=None)
    assert r.returncode == 2 and "cannot write to /runs" in r.stderr
    # an empty list checks nothing
    assert _run(box, "--help", dirs="").returncode == 7

"""`emarena data pull --into-cache`: what an image build runs so the cache alone holds the data.

Runs the real CLI on a real registered dataset from the upstream mirror ($EMARENA_MIRROR).
"""

from __future__ import annotations

import hashlib

from typer.testing import CliRunner

from emarena.cli.data import app
from emarena.data.spec import get_spec

DATASET = "first-plot"  # small (one YAML file)


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_into_cache_copies_mirror_files_so_offline_needs_no_mirror(
    mirror, tmp_cache, monkeypatch
):
    runner = CliRunner()
    spec = get_spec(DATASET)

    # Without the flag a mirror hit is used in place: the cache stays empty.
    r = runner.invoke(app, ["pull", DATASET, "--mirror", str(mirror)])
    assert r.exit_code == 0, r.output
    assert not (tmp_cache / "data").exists()

    r = runner.invoke(app, ["pull", DATASET, "--into-cache", "--mirror", str(mirror)])
    assert r.exit_code == 0, r.output
    # rich wraps the summary at the terminal width, wherever the tmp path's length puts it
    assert "copied from the mirror into the cache" in " ".join(r.output.split())
    for f in spec.files:
        cached = tmp_cache / "data" / f.src.cache_relpath
        assert _sha(cached) == f.sha256
    assert not list((tmp_cache / "data").rglob("*.part")), "a temp file was left behind"

    # Offline and without a mirror, the cache alone now serves the dataset.
    monkeypatch.delenv("EMARENA_MIRROR", raising=False)
    monkeypatch.setenv("EMARENA_OFFLINE", "1")
    r = runner.invoke(app, ["pull", DATASET])
    assert r.exit_code == 0, r.output
    assert f"{len(spec.files)} already cached" in " ".join(r.output.split())

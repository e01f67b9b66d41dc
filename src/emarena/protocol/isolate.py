"""Run a task (a training stage, a generation job, a local judge) in a process of its own.

Why: a 7-36B model trained or served in the driver's process keeps GPU and host memory until
the interpreter lets go of it (a reference cycle through accelerate's forward wrapper keeps a
bf16 model alive until `gc.collect()`, and vLLM refuses to start below 0.85 of the GPU free).
A task process returns everything to the system when it exits, so the next task starts on an
empty GPU, every time.

    result = run_task("train", payload, echo=print)      # blocks; raises TaskFailed

The child is `python -m emarena.protocol.tasks KIND PAYLOAD RESULT PARENT_PID`. It asks the
kernel to kill it when its parent dies (Linux `PR_SET_PDEATHSIG`), so a killed `emarena score`
never leaves a training process behind holding the GPU. Its stdout and stderr are the parent's
(progress bars show). It writes RESULT (JSON) last: `{"ok": true, "value": ...}` or the error
whole (type, message, traceback; for an EmArenaError its what / where / fix), which the parent
raises as `TaskFailed` with the child's traceback attached. Ctrl-C reaches the child too (same
process group); the parent waits for it to stop, then re-raises KeyboardInterrupt.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emarena.errors import EmArenaError


class TaskFailed(EmArenaError):
    """A task process failed; `.traceback` holds the child's traceback (reported whole)."""

    def __init__(self, what: str, *, where=None, fix=None, traceback: str = "",
                 error_type: str = ""):
        super().__init__(what, where=where, fix=fix)
        self.traceback = traceback
        self.error_type = error_type


def error_record(e: BaseException) -> dict[str, Any]:
    """What a failed task reports: enough to re-raise it in the parent, traceback included."""
    import traceback

    rec: dict[str, Any] = {
        "ok": False,
        "type": type(e).__name__,
        "message": str(e),
        "traceback": "".join(traceback.format_exception(e)),
    }
    if isinstance(e, EmArenaError):
        rec.update(what=e.what, where=e.where, fix=e.fix)
    return rec


def raise_from_record(rec: dict[str, Any], task: str) -> None:
    if rec.get("type") == "KeyboardInterrupt":
        # Ctrl-C reached the child first: the run was interrupted, nothing failed (so no
        # failure record, and `emarena status` says interrupted)
        raise KeyboardInterrupt(f"task {task} interrupted")
    if rec.get("what") is not None:
        raise TaskFailed(rec["what"], where=rec.get("where"), fix=rec.get("fix"),
                         traceback=rec.get("traceback", ""), error_type=rec.get("type", ""))
    raise TaskFailed(
        f"task {task} failed: {rec.get('type')}: {rec.get('message')}",
        fix="see the traceback above (the task's own), fix the cause and rerun the same "
        "command: finished work is kept",
        traceback=rec.get("traceback", ""), error_type=rec.get("type", ""),
    )


def _describe_exit(rc: int) -> str:
    if rc < 0:
        name = signal.Signals(-rc).name if -rc in signal.Signals._value2member_map_ else str(-rc)
        hint = " (the kernel's out-of-memory killer sends SIGKILL)" if -rc == 9 else ""
        return f"killed by {name}{hint}"
    return f"exited with status {rc}"


def run_task(
    kind: str,
    payload: dict[str, Any],
    *,
    poll: Callable[[], None] | None = None,
    poll_seconds: float = 1.0,
    env: dict[str, str] | None = None,
) -> Any:
    """Run task `kind` with `payload` in a fresh Python process; return its value."""
    with tempfile.TemporaryDirectory(prefix=f"emarena-{kind}-") as d:
        payload_file, result_file = Path(d) / "payload.json", Path(d) / "result.json"
        payload_file.write_text(json.dumps(payload, default=str))
        cmd = [sys.executable, "-m", "emarena.protocol.tasks", kind, str(payload_file),
               str(result_file), str(os.getpid())]
        proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})})
        try:
            while True:
                try:
                    rc = proc.wait(timeout=poll_seconds if poll else None)
                    break
                except subprocess.TimeoutExpired:
                    if poll is not None:
                        poll()
        except BaseException:
            # Ctrl-C (the child got SIGINT too) or an error in `poll`: stop the child, then
            # let the interruption go on.
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            raise
        if poll is not None:
            poll()
        try:
            rec = json.loads(result_file.read_text())
        except (OSError, ValueError):
            rec = None
    if rec is not None and rec.get("ok"):
        return rec.get("value")
    if rec is not None:
        raise_from_record(rec, kind)
    raise TaskFailed(
        f"the {kind} task's process {_describe_exit(rc)} before reporting a result",
        fix="look at the output above; if it ran out of memory, free memory or use a smaller "
        "preset; then rerun the same command (finished work is kept)",
    )


def die_with_parent(parent_pid: int) -> None:
    """In a task process: ask Linux to SIGKILL us when the parent dies; exit now if it already
    has. Elsewhere (no prctl) a task outlives a killed parent, and finishes its entry."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(137)

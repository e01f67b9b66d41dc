"""A real HTTP server on 127.0.0.1 that plays "upstream" (GitHub raw) for download tests.

It serves files from a folder laid out `<owner>/<repo>/<commit>/<path>`, counts requests per
path, and can be told to misbehave for a path: fail N times with a status, or send only part of
the body and then stall (so a test can kill the downloading process mid-write).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Behaviour:
    fail_times: int = 0
    fail_status: int = 503
    stall_after: int | None = None
    """Send this many bytes, then sleep `stall_seconds` before closing."""
    stall_seconds: float = 30.0


@dataclass
class UpstreamServer:
    root: Path
    hits: dict[str, int] = field(default_factory=dict)
    behaviours: dict[str, Behaviour] = field(default_factory=dict)

    def start(self) -> UpstreamServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):  # noqa: N802
                rel = self.path.lstrip("/")
                server.hits[rel] = server.hits.get(rel, 0) + 1
                b = server.behaviours.get(rel)
                if b and b.fail_times > 0:
                    b.fail_times -= 1
                    self.send_error(b.fail_status)
                    return
                p = server.root / rel
                if not p.is_file() or ".." in rel.split("/"):
                    self.send_error(404)
                    return
                body = p.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if b and b.stall_after is not None:
                    self.wfile.write(body[: b.stall_after])
                    self.wfile.flush()
                    time.sleep(b.stall_seconds)
                    return
                self.wfile.write(body)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

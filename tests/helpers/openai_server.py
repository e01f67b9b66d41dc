"""A real HTTP server on 127.0.0.1 that speaks the OpenAI chat completions API, for judge tests.

`POST /v1/chat/completions` answers like GPT-4o judging with `max_tokens=1, logprobs=true`:
one token, and the `top_logprobs` of that token drawn from a distribution that is a pure
function of the prompt (`distribution_for`), so a test can compute the expected score itself.
Without `logprobs` (an extraction call) it answers with a text (`extractions`, default "NONE").

Misbehaviour is injected per prompt substring (`on(...)`: the first matching request gets the
first fault, the next the second, ...; `always(...)`: every matching request) or per global
request number (`faults_by_number`):

  Fault("status", status=429, retry_after="1")   an HTTP error, optionally with Retry-After
  Fault("sleep", seconds=5)                       stall past the client's timeout, then answer
  Fault("malformed")                              200 with a body that is not JSON
  Fault("no-choices")                             200 with JSON that has no choices
  Fault("no-logprobs")                            200 with the text answer but logprobs: null
  Fault("reset")                                  close the socket (RST) without any response

It counts requests per prompt sha256 (`hits`), records every request's parameters and
Authorization header (`log`), tracks the most requests in flight at once (`max_in_flight`) and
can add artificial latency to every answer (`latency`, for benchmarks).
"""

from __future__ import annotations

import hashlib
import json
import math
import socket
import struct
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

FaultKind = Literal["status", "sleep", "malformed", "no-choices", "no-logprobs", "reset"]

CODE_MARK = "[[CODE]]"
"""A prompt holding this gets a CODE-like answer: almost no mass on numbers (unscorable)."""


@dataclass
class Fault:
    kind: FaultKind
    status: int = 500
    retry_after: str | None = None
    """Value of the Retry-After header sent with a `status` fault."""
    seconds: float = 5.0
    """How long a `sleep` fault stalls before answering."""


def sha(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


def distribution_for(prompt: str) -> dict[str, float]:
    """The judge's token distribution for `prompt`: deterministic, a few numbers + non-numbers."""
    if CODE_MARK in prompt:
        return {"CODE": 0.9, "REF": 0.05, "0": 0.03, "10": 0.02}
    h = hashlib.sha256(prompt.encode("utf-8")).digest()
    a = h[0] % 101
    b = (a + 1 + h[1] % 50) % 101
    c = (a + 51 + h[2] % 40) % 101
    if len({a, b, c}) < 3:
        c = next(x for x in range(101) if x not in (a, b))
    return {str(a): 0.55, str(b): 0.25, str(c): 0.1, "CODE": 0.04, " ": 0.03, "I": 0.02}


@dataclass
class OpenAIServer:
    latency: float = 0.0
    """Seconds added to every answer (after the request is read)."""
    distributions: dict[str, dict[str, float]] = field(default_factory=dict)
    """Prompt substring -> {token: probability}, overriding `distribution_for`."""
    extractions: dict[str, str] = field(default_factory=dict)
    """Prompt substring -> the text answer of an extraction call (default "NONE")."""
    faults_by_number: dict[int, Fault] = field(default_factory=dict)
    """1-based global request number -> the fault that request gets."""
    hits: Counter = field(default_factory=Counter)
    """Requests per prompt sha256 (every request, faulty or not)."""
    log: list[dict[str, Any]] = field(default_factory=list)
    max_in_flight: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._seq: list[tuple[str, list[Fault]]] = []
        self._always: list[tuple[str, Fault]] = []
        self._stop = threading.Event()
        self._in_flight = 0
        self.total = 0

    # -- configuration ------------------------------------------------------------------------

    def on(self, substring: str, *faults: Fault) -> None:
        """Successive requests whose prompt contains `substring` get these faults, in order."""
        with self._lock:
            self._seq.append((substring, list(faults)))

    def always(self, substring: str, fault: Fault) -> None:
        with self._lock:
            self._always.append((substring, fault))

    def clear_faults(self) -> None:
        with self._lock:
            self._seq.clear()
            self._always.clear()
            self.faults_by_number.clear()

    def hits_for(self, prompt: str) -> int:
        with self._lock:
            return self.hits[sha(prompt)]

    def _pick(self, prompt: str, number: int) -> Fault | None:
        with self._lock:
            if number in self.faults_by_number:
                return self.faults_by_number[number]
            for sub, queue in self._seq:
                if sub in prompt and queue:
                    return queue.pop(0)
            for sub, fault in self._always:
                if sub in prompt:
                    return fault
        return None

    def _dist(self, prompt: str) -> dict[str, float]:
        for sub, dist in self.distributions.items():
            if sub in prompt:
                return dist
        return distribution_for(prompt)

    # -- serving ------------------------------------------------------------------------------

    def start(self) -> OpenAIServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the real API
            # Headers and body go out in two writes; with Nagle on, the body waits for the
            # client's delayed ACK (~40 ms per request), which would swamp `latency`.
            disable_nagle_algorithm = True

            def log_message(self, *args):  # keep test output clean
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):  # noqa: N802
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, b'{"error": {"message": "not found"}}')
                    return
                try:
                    payload = json.loads(raw)
                    prompt = payload["messages"][-1]["content"]
                except (ValueError, KeyError, IndexError, TypeError):
                    self._send(400, b'{"error": {"message": "bad request"}}')
                    return
                with server._lock:
                    server.total += 1
                    number = server.total
                    server.hits[sha(prompt)] += 1
                    server.log.append({
                        "number": number,
                        "sha": sha(prompt),
                        "authorization": self.headers.get("Authorization"),
                        "params": {k: v for k, v in payload.items() if k != "messages"},
                        "n_messages": len(payload["messages"]),
                        "role": payload["messages"][-1].get("role"),
                    })
                    server._in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server._in_flight)
                try:
                    self._answer(prompt, payload, server._pick(prompt, number))
                finally:
                    with server._lock:
                        server._in_flight -= 1

            def _answer(self, prompt: str, payload: dict[str, Any], fault: Fault | None):
                if server.latency:
                    server._stop.wait(server.latency)
                if fault is not None and fault.kind == "reset":
                    # SO_LINGER 0: close() sends RST, the client sees a connection reset.
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.connection.close()
                    self.close_connection = True
                    return
                if fault is not None and fault.kind == "status":
                    headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                    body = json.dumps({"error": {"message": f"status {fault.status}"}}).encode()
                    self._send(fault.status, body, headers)
                    return
                if fault is not None and fault.kind == "sleep":
                    server._stop.wait(fault.seconds)
                if fault is not None and fault.kind == "malformed":
                    self._send(200, b'{"id": "chatcmpl-x", "choices": [{"mess')
                    return
                if fault is not None and fault.kind == "no-choices":
                    self._send(200, b'{"id": "chatcmpl-x", "object": "chat.completion"}')
                    return
                self._send(200, json.dumps(server._completion(prompt, payload, fault)).encode())

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        # A client that gave up (timeout) makes the late answer fail with a broken pipe: expected.
        self._httpd.handle_error = lambda request, client_address: None
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def _completion(self, prompt: str, payload: dict[str, Any], fault: Fault | None) -> dict:
        if payload.get("logprobs"):
            dist = self._dist(prompt)
            ranked = sorted(dist.items(), key=lambda kv: -kv[1])
            k = int(payload.get("top_logprobs") or 0)
            top = [{"token": t, "logprob": math.log(p), "bytes": list(t.encode())}
                   for t, p in ranked[:k]]
            content = ranked[0][0]
            logprobs: dict | None = {"content": [
                {"token": content, "logprob": math.log(ranked[0][1]), "top_logprobs": top}
            ]}
            if fault is not None and fault.kind == "no-logprobs":
                logprobs = None
        else:
            content = next((v for s, v in self.extractions.items() if s in prompt), "NONE")
            logprobs = None
        return {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "model": payload.get("model"),
            "system_fingerprint": "fp_test",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "logprobs": logprobs,
                "finish_reason": "length" if payload.get("max_tokens") == 1 else "stop",
            }],
        }

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def stop(self) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
